// A small model and a deterministic data stream for the data-parallel tests: the global batch of
// every step is drawn from a generator seeded by the step, so it does not depend on the world size.
#pragma once
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <utility>
#include <vector>

namespace kiln::parallel::testing {

inline torch::nn::Sequential make_mlp(int64_t in, int64_t hidden, int64_t classes, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::nn::Sequential(torch::nn::Linear(in, hidden), torch::nn::Tanh(), torch::nn::Linear(hidden, hidden),
                               torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden})), torch::nn::Tanh(),
                               torch::nn::Linear(hidden, classes));
}

// (inputs, labels) of global step `step`: `rows` examples, labelled by a fixed random linear
// teacher so that there is something to learn.
inline std::pair<at::Tensor, at::Tensor> global_batch(int64_t step, int64_t rows, int64_t in, int64_t classes) {
  auto teacher_gen = at::detail::createCPUGenerator(1);
  at::Tensor teacher = at::randn({in, classes}, teacher_gen);
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(1000 + step));
  at::Tensor x = at::randn({rows, in}, gen);
  at::Tensor y = x.matmul(teacher).argmax(1);
  return {x, y};
}

// Decay flags as a trainer sets them: weights of Linear layers decay; biases and norms do not.
inline std::vector<bool> decay_flags(torch::nn::Sequential& m) {
  std::vector<bool> flags;
  for (const auto& item : m->named_parameters()) {
    const std::string& name = item.key();
    bool is_norm = name.rfind("3.", 0) == 0;  // the LayerNorm at index 3
    flags.push_back(!is_norm && name.find("bias") == std::string::npos);
  }
  return flags;
}

}  // namespace kiln::parallel::testing
