// Precompiled header for every kiln target: the torch headers dominate compile time
// (about 20 s a translation unit without it), so they are parsed once here.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn.h>
#include <torch/optim.h>
#include <torch/autograd.h>
#include <torch/serialize.h>
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
