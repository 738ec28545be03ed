#include "methods/ls_llama/heads.h"

#include <ATen/ATen.h>

#include "core/error.h"

namespace kiln::methods::ls_llama {

HeadImpl::HeadImpl(int64_t hidden, int64_t labels, bool with_bias, double p, double init_std, const at::Device& device)
    : dropout(p) {
  KILN_CHECK(hidden > 0 && labels > 0, "head: hidden {} labels {}", hidden, labels);
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  // Drawn on the CPU generator so the initial head is the same on CPU and GPU machines for one seed.
  weight = register_parameter("weight", at::normal(0.0, init_std, {labels, hidden}, c10::nullopt,
                                                   at::TensorOptions().dtype(at::kFloat)).to(device));
  if (with_bias) bias = register_parameter("bias", at::zeros({labels}, opts));
}

at::Tensor HeadImpl::forward(const at::Tensor& x) {
  at::Tensor h = x.to(at::kFloat);
  if (dropout > 0 && is_training()) h = at::dropout(h, dropout, /*train=*/true);
  return at::linear(h, weight, bias);
}

Head sequence_head(int64_t hidden, int64_t labels, double dropout, double init_std, const at::Device& device) {
  return Head(hidden, labels, /*bias=*/false, dropout, init_std, device);
}

Head token_head(int64_t hidden, int64_t labels, double dropout, double init_std, const at::Device& device) {
  return Head(hidden, labels, /*bias=*/true, dropout, init_std, device);
}

at::Tensor sequence_logits(HeadImpl& head, const at::Tensor& hidden, const at::Tensor& mask, model::Pooling p,
                           bool pads_pooled) {
  if (p == model::Pooling::last) return head.forward(model::pool(hidden, mask, p));
  if (p == model::Pooling::mean)
    return head.forward(pads_pooled ? hidden.mean(1) : model::pool(hidden, mask, p));
  at::Tensor lg = head.forward(hidden);  // [B, T, labels]
  return pads_pooled ? std::get<0>(lg.max(1)) : model::pool(lg, mask, p);
}

}  // namespace kiln::methods::ls_llama
