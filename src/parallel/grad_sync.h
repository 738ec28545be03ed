// Data-parallel gradient synchronisation, PyTorch-DDP style:
//  - the trainable parameters (registration order) are packed, in REVERSE order, into flat buckets
//    of about dist.bucket_mb, because backward produces the last layers' gradients first;
//  - an autograd hook on every parameter copies its gradient into its bucket slot; when a bucket's
//    last slot arrives, the bucket's all-reduce is queued on the communicator's thread and runs
//    while backward goes on with the earlier layers (dist.overlap; off: everything after backward);
//  - buckets are started strictly in index order, so every rank issues the same collectives in the
//    same order even if its autograd happens to finish them in another;
//  - set_sync(false) on the non-final micro-batches of gradient accumulation: the hooks stay out
//    of the way and .grad accumulates locally, with no communication;
//  - finish() waits for every bucket and writes the reduced gradients back into .grad.
// With dist.zero1 the buckets are reduce-scattered instead: rank r receives the reduced chunk r of
// every bucket (its shard), .grad is released, and Zero1AdamW steps that shard.
#pragma once
#include <ATen/core/Tensor.h>

#include <mutex>
#include <vector>

#include "parallel/communicator.h"

namespace kiln::parallel {

class GradSync {
 public:
  // `op`: Sum when the loss is already divided by the global token count (kiln's trainer), Avg
  // when every rank's loss is a mean over its own equal share.
  GradSync(std::vector<at::Tensor> params, Communicator& comm, const kiln::DistConfig& cfg,
           ReduceOp op = ReduceOp::Sum);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // Collective: every rank takes rank 0's parameter values (call once, before training).
  void broadcast_parameters();
  // false: the next backward only accumulates locally. true (default): it communicates.
  void set_sync(bool sync) { sync_ = sync; }
  bool sync() const { return sync_; }
  // After a synced backward: waits for every bucket and puts the result in place (.grad, or the
  // shards for ZeRO-1). Parameters that got no gradient in this backward count as zeros. Does
  // nothing after a backward with sync off.
  void finish();

  // Seconds finish() spent waiting for communication that backward did not hide (last step).
  double last_wait_s() const { return last_wait_s_; }

  struct Slot {
    size_t param;         // index into params()
    int64_t offset;       // element offset in the bucket
    int64_t numel;
  };
  struct Bucket {
    std::vector<Slot> slots;
    int64_t numel = 0;    // used elements
    int64_t padded = 0;   // numel rounded up to a multiple of the world size
    at::Tensor flat;      // padded elements: gradients in, reduced gradients out
    at::Tensor shard;     // ZeRO-1: padded / size elements, this rank's reduced chunk
    size_t ready = 0;     // slots filled in the current backward
    WorkPtr work;
  };
  const std::vector<Bucket>& buckets() const { return buckets_; }
  std::vector<Bucket>& buckets() { return buckets_; }
  const std::vector<at::Tensor>& params() const { return params_; }
  Communicator& comm() { return comm_; }
  bool sharded() const { return sharded_; }
  ReduceOp reduce_op() const { return op_; }

 private:
  void on_grad(size_t param, const at::Tensor& grad);
  void launch_ready();       // starts the ready buckets at the front, in order; needs mutex_
  void launch(size_t b);
  at::Tensor slot_view(const Bucket& b, const Slot& s) const;

  std::vector<at::Tensor> params_;
  Communicator& comm_;
  ReduceOp op_;
  bool overlap_, sharded_;
  bool sync_ = true;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, size_t>> where_;  // param -> (bucket, slot)
  std::vector<char> filled_;                       // param -> slot filled in this backward
  std::vector<unsigned> hooks_;
  size_t next_launch_ = 0;
  std::mutex mutex_;  // autograd may run hooks on several threads (one per device)
  double last_wait_s_ = 0;
};

// Collective: every rank takes rank 0's values of `tensors` (buffers, frozen weights...).
void broadcast_tensors(Communicator& comm, const std::vector<at::Tensor>& tensors);

}  // namespace kiln::parallel
