// Which examples each rank trains on. The order of an epoch is a permutation drawn from (seed,
// epoch) alone, cut into global batches; rank r of N takes its contiguous slice of every global
// batch. So the global batches do not depend on the number of ranks: N ranks with micro-batch b see
// what 1 rank with N*b sees, and a run can resume on another number of ranks from (epoch, position).
#pragma once
#include <cstdint>
#include <vector>

namespace kiln::data {

class Sampler {
 public:
  struct State {
    int64_t epoch = 0;
    int64_t position = 0;  // examples of this epoch's order already handed out (all ranks together)
  };

  // lengths (optional, one per example): group by length. Each run of 50 global batches of the
  // shuffled order is sorted longest first, so batches hold similar lengths (less padding) while
  // the batch order stays random (the Hugging Face LengthGroupedSampler scheme).
  // drop_last: skip an epoch's final, smaller global batch.
  Sampler(int64_t size, int64_t global_batch, int world_size, int rank, uint64_t seed, bool shuffle = true,
          std::vector<int64_t> lengths = {}, bool drop_last = false);

  // This rank's slice of the next global batch; after the last batch of an epoch, the next epoch
  // starts. A final smaller batch is split as evenly as it goes, so a rank may get fewer (or none).
  std::vector<int64_t> next();
  std::vector<int64_t> next_global();        // the whole next global batch, every rank's slice

  int64_t size() const { return size_; }
  int64_t global_batch() const { return global_batch_; }
  int64_t batches_per_epoch() const;
  int64_t epoch() const { return state_.epoch; }
  State state() const { return state_; }
  void set_state(State s);                  // any world size; throws InputError if out of range

  // The global order of an epoch (same on every rank, for every world size).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  int64_t usable() const;                   // examples per epoch after drop_last
  void ensure_order();
  int64_t size_, global_batch_;
  int world_size_, rank_;
  uint64_t seed_;
  bool shuffle_, drop_last_;
  std::vector<int64_t> lengths_;
  State state_;
  std::vector<int64_t> order_;
  int64_t order_epoch_ = -1;
};

}  // namespace kiln::data
