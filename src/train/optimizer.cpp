#include "train/optimizer.h"

#include <cmath>
#include <map>

#include "core/error.h"

namespace kiln::train {

double clip_coefficient(double norm, double max_grad_norm) {
  if (max_grad_norm <= 0 || !std::isfinite(norm)) return 1.0;
  return std::min(1.0, max_grad_norm / (norm + 1e-6));
}

double sum_of_squares(const std::vector<at::Tensor>& tensors) {
  if (tensors.empty()) return 0;
  // One read back for all tensors (a device sync each would stall a GPU step once per tensor).
  at::Tensor total = at::zeros({}, tensors[0].options().dtype(at::kDouble));
  for (auto& t : tensors) total += t.to(total.device(), at::kDouble).pow(2).sum();
  return total.item<double>();
}

void adamw_update(at::Tensor& p, const at::Tensor& g, at::Tensor& m, at::Tensor& v, double lr, int64_t t,
                  const AdamWOptions& o) {
  const double bc1 = 1 - std::pow(o.beta1, double(t));
  const double bc2_sqrt = std::sqrt(1 - std::pow(o.beta2, double(t)));
  m.mul_(o.beta1).add_(g, 1 - o.beta1);
  v.mul_(o.beta2).addcmul_(g, g, 1 - o.beta2);
  at::Tensor denom = (v.sqrt() / bc2_sqrt).add_(o.eps);
  p.addcdiv_(m, denom, -(lr / bc1));
}

void check_adamw_state(const std::map<std::string, at::Tensor>& by_name, const std::vector<std::string>& names,
                       const std::vector<at::IntArrayRef>& shapes) {
  for (size_t i = 0; i < names.size(); ++i)
    for (const char* suffix : {"|exp_avg", "|exp_avg_sq"}) {
      auto it = by_name.find(names[i] + suffix);
      if (it == by_name.end())
        input_error("checkpoint has no optimizer state `{}{}`: was it written by another method or LoRA setup?",
                    names[i], suffix);
      if (!it->second.sizes().equals(shapes[i]))
        input_error("checkpoint optimizer state `{}{}` has shape {}, the model needs {}", names[i], suffix,
                    fmt::join(it->second.sizes(), "x"), fmt::join(shapes[i], "x"));
    }
}

AdamW::AdamW(std::vector<Param> params, const AdamWOptions& o) : params_(std::move(params)), o_(o) {
  for (auto& p : params_) {
    // State in float32 even for 16-bit parameters: the moments of bf16 weights lose too much otherwise.
    auto opts = p.p.options().dtype(p.p.is_floating_point() && p.p.element_size() < 4 ? at::kFloat : p.p.scalar_type());
    m_.push_back(at::zeros(p.p.sizes(), opts));
    v_.push_back(at::zeros(p.p.sizes(), opts));
  }
}

double AdamW::step(double lr, double max_grad_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (auto& p : params_)
    if (p.p.grad().defined()) grads.push_back(p.p.grad());
  const double norm = std::sqrt(sum_of_squares(grads));
  const double coef = clip_coefficient(norm, max_grad_norm);
  if (coef < 1)
    for (auto& g : grads) g.mul_(coef);
  ++t_;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor p = params_[i].p;
    at::Tensor g = p.grad();
    if (!g.defined()) continue;  // a parameter that took no part in this step's loss
    at::Tensor pf = p.scalar_type() == m_[i].scalar_type() ? p : p.to(m_[i].scalar_type());
    g = g.to(m_[i].scalar_type());
    if (params_[i].decay && o_.weight_decay != 0) pf.mul_(1 - lr * o_.weight_decay);
    adamw_update(pf, g, m_[i], v_[i], lr, t_, o_);
    if (!pf.is_same(p)) p.copy_(pf);
  }
  return norm;
}

TensorList AdamW::state(bool keep) {
  TensorList out;
  if (!keep) return out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(params_[i].name + "|exp_avg", m_[i].to(at::kCPU, false, true));
    out.emplace_back(params_[i].name + "|exp_avg_sq", v_[i].to(at::kCPU, false, true));
  }
  return out;
}

void AdamW::load_state(const TensorList& state, int64_t steps) {
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  std::vector<std::string> names;
  std::vector<at::IntArrayRef> shapes;
  for (auto& p : params_) names.push_back(p.name), shapes.push_back(p.p.sizes());
  check_adamw_state(by_name, names, shapes);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    m_[i].copy_(by_name.at(params_[i].name + "|exp_avg"));
    v_[i].copy_(by_name.at(params_[i].name + "|exp_avg_sq"));
  }
  t_ = steps;
}

}  // namespace kiln::train
