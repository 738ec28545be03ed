// ZeRO stage 1: AdamW whose moments are sharded across ranks. Rank r owns chunk r of every
// gradient bucket of a GradSync built with dist.zero1 (reduce-scatter gives it exactly the reduced
// gradients of that chunk); it steps those elements and the buckets are all-gathered back into
// the parameters. Optimizer memory per rank is 1/N of plain AdamW's.
//
// The arithmetic is AdamW's (train/optimizer.h: adamw_update, clip_coefficient), so the ZeRO and
// the plain path give the same losses. Clipping uses the global norm over all shards.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "parallel/grad_sync.h"
#include "train/optimizer.h"

namespace kiln::train {

using parallel::GradSync;

// Optimizer state in a layout that does not depend on the world size: one tensor per parameter,
// shaped like it, in registration order. This is what a checkpoint stores.
struct AdamWState {
  int64_t step = 0;
  std::vector<at::Tensor> exp_avg, exp_avg_sq;
};

class Zero1AdamW : public Optimizer {
 public:
  // decay[i]: whether parameter i gets weight decay (false for norms and biases). `names`: the
  // parameters' names for state() / load_state(TensorList) (default "p<i>").
  Zero1AdamW(GradSync& sync, std::vector<bool> decay, AdamWOptions options, std::vector<std::string> names = {});

  // After sync.finish(): clips to max_grad_norm (> 0) by the global norm, steps this rank's shard
  // with learning rate `lr`, all-gathers the parameters. Collective. Returns the global gradient
  // norm before clipping.
  double step(double lr, double max_grad_norm) override;
  int64_t steps() const override { return step_; }
  // The Optimizer interface over gather_state / load_state below. Collective.
  TensorList state(bool keep) override;
  void load_state(const TensorList& state, int64_t steps) override;

  // Collective. The full state lands on rank 0, in host memory (other ranks get `step` and empty
  // vectors).
  AdamWState gather_state();
  // Collective. Only rank 0's tensors are read; the others may pass empty vectors.
  void load_state(const AdamWState& full);

  // Bytes of optimizer state held by this rank (both moments).
  int64_t state_bytes() const;

 private:
  struct Segment {       // a run of this rank's shard lying in one parameter
    size_t param;
    int64_t param_offset, shard_offset, numel;
    bool decay;
  };
  struct Shard {
    int64_t begin = 0, numel = 0;  // in the bucket's flat buffer
    std::vector<Segment> segments;
    at::Tensor exp_avg, exp_avg_sq;
  };
  GradSync& sync_;
  std::vector<bool> decay_;
  std::vector<std::string> names_;
  AdamWOptions opt_;
  std::vector<Shard> shards_;  // one per bucket
  int64_t step_ = 0;
};

}  // namespace kiln::train
