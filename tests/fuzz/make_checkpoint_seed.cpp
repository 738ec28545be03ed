// Writes a small valid checkpoint (two weight groups, an optimizer tensor, metadata) for the
// fuzz_checkpoint corpus: tests/fuzz/seeds.sh runs it.
#include <ATen/ATen.h>

#include <cstdio>

#include "train/checkpoint.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_checkpoint_seed OUT.h5\n");
    return 2;
  }
  kiln::train::CheckpointFile c;
  c.groups["weights"].emplace_back("layers.0.lora_A", at::arange(6, at::kFloat).reshape({2, 3}));
  c.groups["weights"].emplace_back("head.bias", at::ones({4}, at::kBFloat16));
  c.groups["optimizer"].emplace_back("step", at::full({1}, 7, at::kLong));
  c.attrs["meta"] = R"({"format": 1, "method": "lm", "step": 1})";
  c.attrs["recipe"] = "method: lm\n";
  kiln::train::write_checkpoint(argv[1], c);
  return 0;
}
