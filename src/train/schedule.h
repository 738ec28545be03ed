// Learning-rate schedules, as transformers' get_{constant,linear,cosine}_schedule_with_warmup
// compute them (so recipes that copy a paper's HF settings get the paper's learning rates): the
// factor applied at optimizer step s (0-based) rises linearly from 0 over `warmup` steps, then stays
// at 1 (constant), falls linearly to 0 at `total` (linear) or follows half a cosine to 0 (cosine).
#pragma once
#include <cstdint>
#include <string>

namespace kiln::train {

class Schedule {
 public:
  Schedule(std::string kind, double base_lr, int64_t warmup, int64_t total);
  double factor(int64_t step) const;
  double lr(int64_t step) const { return base_lr_ * factor(step); }
  const std::string& kind() const { return kind_; }
  int64_t warmup() const { return warmup_; }
  int64_t total() const { return total_; }

 private:
  std::string kind_;
  double base_lr_;
  int64_t warmup_, total_;
};

// train.warmup_steps, or train.warmup_ratio * total rounded up (as transformers does) when it is 0.
int64_t warmup_steps(int64_t warmup_steps, double warmup_ratio, int64_t total);

}  // namespace kiln::train
