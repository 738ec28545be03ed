#include "data/sampler.h"

#include <random>

#include "core/error.h"

namespace kiln::data {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Unbiased draw in [0, n): std::uniform_int_distribution differs between standard libraries, and
// the order must be the same wherever a run resumes.
uint64_t below(std::mt19937_64& g, uint64_t n) {
  uint64_t threshold = (0 - n) % n;
  while (true) {
    uint64_t r = g();
    if (r >= threshold) return r % n;
  }
}

}  // namespace

Sampler::Sampler(int64_t size, int64_t global_batch, int world_size, int rank, uint64_t seed, bool shuffle,
                 std::vector<int64_t> lengths, bool drop_last)
    : size_(size), global_batch_(global_batch), world_size_(world_size), rank_(rank), seed_(seed),
      shuffle_(shuffle), drop_last_(drop_last), lengths_(std::move(lengths)) {
  if (size <= 0) input_error("the dataset is empty: nothing to sample");
  if (global_batch <= 0) input_error("global batch {} must be positive", global_batch);
  if (world_size <= 0 || rank < 0 || rank >= world_size)
    throw InternalError(fmt::format("sampler: rank {} of {}", rank, world_size));
  if (global_batch % world_size != 0)
    input_error("global batch {} is not a multiple of the {} ranks (train.global_batch)", global_batch, world_size);
  if (!lengths_.empty() && int64_t(lengths_.size()) != size)
    throw InternalError(fmt::format("sampler: {} lengths for {} examples", lengths_.size(), size));
  if (drop_last_ && size < global_batch)
    input_error("{} examples make no full global batch of {} (drop_last)", size, global_batch);
}

int64_t Sampler::usable() const { return drop_last_ ? size_ / global_batch_ * global_batch_ : size_; }

int64_t Sampler::batches_per_epoch() const { return (usable() + global_batch_ - 1) / global_batch_; }

std::vector<int64_t> Sampler::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(size_));
  for (int64_t i = 0; i < size_; ++i) order[size_t(i)] = i;
  if (shuffle_) {
    std::mt19937_64 g(splitmix64(seed_ ^ splitmix64(uint64_t(epoch) + 0x5eed)));
    for (int64_t i = size_ - 1; i > 0; --i) std::swap(order[size_t(i)], order[below(g, uint64_t(i) + 1)]);
  }
  if (!lengths_.empty()) {
    int64_t mega = 50 * global_batch_;
    for (int64_t b = 0; b < size_; b += mega) {
      auto first = order.begin() + b, last = order.begin() + std::min(size_, b + mega);
      std::stable_sort(first, last, [&](int64_t x, int64_t y) { return lengths_[size_t(x)] > lengths_[size_t(y)]; });
    }
  }
  return order;
}

void Sampler::ensure_order() {
  if (state_.position >= usable()) {
    ++state_.epoch;
    state_.position = 0;
  }
  if (order_epoch_ != state_.epoch) {
    order_ = epoch_order(state_.epoch);
    order_epoch_ = state_.epoch;
  }
}

std::vector<int64_t> Sampler::next_global() {
  ensure_order();
  int64_t b = state_.position, e = std::min(usable(), b + global_batch_);
  state_.position = e;
  return std::vector<int64_t>(order_.begin() + b, order_.begin() + e);
}

std::vector<int64_t> Sampler::next() {
  std::vector<int64_t> g = next_global();
  size_t m = g.size(), W = size_t(world_size_), r = size_t(rank_);
  return std::vector<int64_t>(g.begin() + int64_t(m * r / W), g.begin() + int64_t(m * (r + 1) / W));
}

void Sampler::set_state(State s) {
  if (s.epoch < 0 || s.position < 0 || s.position > usable())
    input_error("sampler state (epoch {}, position {}) does not fit a dataset of {} examples: was the data store "
                "rebuilt since the checkpoint?",
                s.epoch, s.position, size_);
  state_ = s;
}

}  // namespace kiln::data
