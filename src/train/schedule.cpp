#include "train/schedule.h"

#include <cmath>

#include "core/error.h"

namespace kiln::train {

Schedule::Schedule(std::string kind, double base_lr, int64_t warmup, int64_t total)
    : kind_(std::move(kind)), base_lr_(base_lr), warmup_(warmup), total_(total) {
  if (kind_ != "constant" && kind_ != "linear" && kind_ != "cosine")
    input_error("train.schedule: `{}` is not one of constant, linear, cosine", kind_);
  KILN_CHECK(warmup_ >= 0 && total_ >= 0, "schedule warmup {} total {}", warmup_, total_);
}

double Schedule::factor(int64_t s) const {
  if (s < warmup_) return double(s) / double(std::max<int64_t>(1, warmup_));
  if (kind_ == "constant") return 1.0;
  double span = double(std::max<int64_t>(1, total_ - warmup_));
  if (kind_ == "linear") return std::max(0.0, double(total_ - s) / span);
  double progress = double(s - warmup_) / span;
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

int64_t warmup_steps(int64_t warmup_steps, double warmup_ratio, int64_t total) {
  if (warmup_steps > 0) return warmup_steps;
  return int64_t(std::ceil(warmup_ratio * double(total)));
}

}  // namespace kiln::train
