// bf16 autocast for a training step's forward pass (train.precision: bf16), used by the trainer and
// by bench/gpu's step so both run the same precision.
#pragma once
#include <ATen/autocast_mode.h>
#include <c10/core/Device.h>
#include <torch/version.h>

namespace kiln::train {

// bf16 autocast for the forward pass, on the device the model lives on; restored on exit.
class Autocast {
 public:
  Autocast(bool on, c10::Device device) : on_(on), cuda_(device.is_cuda()) {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    auto dt = cuda_ ? at::kCUDA : at::kCPU;
    prev_ = at::autocast::is_autocast_enabled(dt);
    at::autocast::set_autocast_dtype(dt, at::kBFloat16);
    at::autocast::set_autocast_enabled(dt, true);
#else
    if (cuda_) {
      prev_ = at::autocast::is_enabled();
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(true);
    } else {
      prev_ = at::autocast::is_cpu_enabled();
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
#endif
  }
  ~Autocast() {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(cuda_ ? at::kCUDA : at::kCPU, prev_);
#else
    if (cuda_)
      at::autocast::set_enabled(prev_);
    else
      at::autocast::set_cpu_enabled(prev_);
#endif
    // Cached bf16 copies of weights must not outlive the step: the optimizer changes the weights.
    at::autocast::clear_cache();
  }

 private:
  bool on_, cuda_, prev_ = false;
};

}  // namespace kiln::train
