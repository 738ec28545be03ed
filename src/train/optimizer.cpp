#include "train/optimizer.h"

#include <cmath>
#include <map>

#include "core/error.h"

namespace kiln::train {

AdamW::AdamW(std::vector<Param> params, double beta1, double beta2, double eps, double weight_decay)
    : params_(std::move(params)), b1_(beta1), b2_(beta2), eps_(eps), wd_(weight_decay) {
  for (auto& p : params_) {
    // State in float32 even for 16-bit parameters: the moments of bf16 weights lose too much otherwise.
    auto opts = p.p.options().dtype(p.p.is_floating_point() && p.p.element_size() < 4 ? at::kFloat : p.p.scalar_type());
    m_.push_back(at::zeros(p.p.sizes(), opts));
    v_.push_back(at::zeros(p.p.sizes(), opts));
  }
}

void AdamW::step(double lr) {
  ++t_;
  at::NoGradGuard no_grad;
  const double bc1 = 1 - std::pow(b1_, double(t_));
  const double bc2_sqrt = std::sqrt(1 - std::pow(b2_, double(t_)));
  const double step_size = lr / bc1;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor p = params_[i].p;
    at::Tensor g = p.grad();
    if (!g.defined()) continue;  // a parameter that took no part in this step's loss
    at::Tensor pf = p.scalar_type() == m_[i].scalar_type() ? p : p.to(m_[i].scalar_type());
    g = g.to(m_[i].scalar_type());
    if (params_[i].decay && wd_ != 0) pf.mul_(1 - lr * wd_);
    m_[i].mul_(b1_).add_(g, 1 - b1_);
    v_[i].mul_(b2_).addcmul_(g, g, 1 - b2_);
    at::Tensor denom = (v_[i].sqrt() / bc2_sqrt).add_(eps_);
    pf.addcdiv_(m_[i], denom, -step_size);
    if (!pf.is_same(p)) p.copy_(pf);
  }
}

TensorList AdamW::state() {
  TensorList out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(params_[i].name + "|exp_avg", m_[i]);
    out.emplace_back(params_[i].name + "|exp_avg_sq", v_[i]);
  }
  return out;
}

void AdamW::load_state(const TensorList& state, int64_t steps) {
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (auto [suffix, dst] : {std::pair<const char*, at::Tensor*>{"|exp_avg", &m_[i]}, {"|exp_avg_sq", &v_[i]}}) {
      auto it = by_name.find(params_[i].name + suffix);
      if (it == by_name.end())
        input_error("checkpoint has no optimizer state `{}{}`: was it written by another method or LoRA setup?",
                    params_[i].name, suffix);
      if (!it->second.sizes().equals(dst->sizes()))
        input_error("checkpoint optimizer state `{}{}` has shape {}, the model needs {}", params_[i].name, suffix,
                    fmt::join(it->second.sizes(), "x"), fmt::join(dst->sizes(), "x"));
      dst->copy_(it->second);
    }
  }
  t_ = steps;
}

}  // namespace kiln::train
