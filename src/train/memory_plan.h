// The memory a training run will need per rank, estimated from the recipe and the model's
// config.json before anything is loaded, against what the device has: printed at the start of
// `kiln train`, and a run that cannot fit is refused with the figures (train.memory_check) before
// the model is read. docs/train.md "Memory plan" gives the formulas and how far they were checked.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace kiln {
struct Recipe;
}
namespace kiln::model {
struct LlamaConfig;
}

namespace kiln::train {

struct MemoryPlan {
  int64_t parameters = 0;          // of the model (without a method's small head)
  int64_t trainable = 0;           // LoRA matrices (+ lora.extra_trainable), or every parameter (- model.freeze)
  double weights = 0;              // bytes, per rank
  double gradients = 0;
  double optimizer = 0;            // AdamW's two moments in float32, divided over ranks by ZeRO-1
  double buckets = 0;              // more than one rank: GradSync's persistent gradient buckets (one
                                   // more gradient copy), plus the reduced shard under ZeRO-1
  double checkpoint = 0;           // rank 0 while it writes a checkpoint: host copies of the trainable
                                   // weights and of the whole optimizer state (in `total` on CPU only)
  double activations = 0;          // one micro-batch of train.micro_batch x data.max_len tokens, as run
  double activations_other = 0;    // the same with model.activation_checkpointing the other way round
  double logits = 0;               // float32 logits and their gradient over the vocabulary
  double total = 0;                // weights + gradients + optimizer + buckets + activations + logits
                                   // (+ checkpoint on CPU, where host memory is the device's)
  double available = 0;            // bytes this rank may use: the GPU's memory, or host memory / local ranks
  std::string device;              // what `available` is

  std::string table(const Recipe& r, int world_size) const;
};

// local_size: ranks sharing this node's host memory (CPU runs).
MemoryPlan plan_memory(const Recipe& r, const model::LlamaConfig& c, int world_size, int local_size, c10::Device dev);

// Prints the plan (rank 0) and, with train.memory_check: refuse, throws InputError when it does
// not fit; `warn` logs and goes on.
void check_memory_plan(const Recipe& r, int world_size, int local_size, c10::Device dev, bool root);

}  // namespace kiln::train
