#include "methods/fractal/losses.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace kiln::methods::fractal {

Aggregation parse_aggregation(const std::string& s) {
  if (s == "max") return Aggregation::max;
  if (s == "min") return Aggregation::min;
  if (s == "avg") return Aggregation::avg;
  throw InternalError("aggregation " + s);
}

const char* aggregation_name(Aggregation a) {
  return a == Aggregation::max ? "max" : a == Aggregation::min ? "min" : "avg";
}

namespace {
at::Tensor count(const at::Tensor& mask) { return mask.sum(1).to(at::kFloat).clamp_min(1); }
}  // namespace

at::Tensor aggregate(const at::Tensor& logits, const at::Tensor& mask, Aggregation a) {
  const double inf = std::numeric_limits<double>::infinity();
  switch (a) {
    case Aggregation::max: return std::get<0>(logits.masked_fill(mask.logical_not(), -inf).max(1));
    case Aggregation::min: return std::get<0>(logits.masked_fill(mask.logical_not(), inf).min(1));
    case Aggregation::avg: return (at::sigmoid(logits) * mask).sum(1) / count(mask);
  }
  return {};
}

at::Tensor bag_probability(const at::Tensor& logits, const at::Tensor& mask, Aggregation a) {
  at::Tensor s = aggregate(logits, mask, a);
  return a == Aggregation::avg ? s : at::sigmoid(s);
}

at::Tensor bag_loss(const at::Tensor& logits, const at::Tensor& mask, const at::Tensor& y, Aggregation a) {
  at::Tensor s = aggregate(logits, mask, a);
  if (a == Aggregation::avg) {
    // A mean of probabilities is no logit: BCE on the probability, written out (CUDA autocast
    // refuses at::binary_cross_entropy), kept off 0 and 1 as torch's clamps its log at -100.
    const auto type = at::promote_types(s.scalar_type(), at::kFloat);  // float32 at least, bf16 never
    at::Tensor p = s.to(type).clamp(1e-7, 1 - 1e-7), t = y.to(type);
    return -(t * at::log(p) + (1 - t) * at::log1p(-p)).sum();
  }
  return at::binary_cross_entropy_with_logits(s, y, {}, {}, at::Reduction::Sum);
}

CosTarget parse_cos_target(const std::string& s) {
  if (s == "one_minus") return CosTarget::one_minus;
  if (s == "one_plus") return CosTarget::one_plus;
  throw InternalError("cos_target " + s);
}

const char* cos_target_name(CosTarget t) { return t == CosTarget::one_minus ? "one_minus" : "one_plus"; }

at::Tensor cosine_prior(const at::Tensor& logits, const at::Tensor& mask, const at::Tensor& sentences,
                        const at::Tensor& context, CosTarget target) {
  at::Tensor cos = at::cosine_similarity(sentences, context.unsqueeze(1).expand_as(sentences), 2, 1e-8);  // [B, S]
  at::Tensor s = target == CosTarget::one_plus ? (1 + cos) / 2 : (1 - cos) / 2;
  at::Tensor bce = at::binary_cross_entropy_with_logits(logits, s.detach(), {}, {}, at::Reduction::None);
  return ((bce * mask).sum(1) / count(mask)).sum();
}

at::Tensor correlation_prior(const at::Tensor& logits, const at::Tensor& mask, const at::Tensor& sentences) {
  // Pearson between two embeddings = cosine of the embeddings centred over their dimensions.
  at::Tensor centred = sentences - sentences.mean(2, true);
  at::Tensor unit = centred / centred.norm(2, 2, true).clamp_min(1e-8);
  at::Tensor c = ((1 + at::matmul(unit, unit.transpose(1, 2))) / 2).detach();  // [B, S, S]
  at::Tensor p = at::sigmoid(logits);
  at::Tensor q = 1 - p;
  at::Tensor both_neg = q.unsqueeze(2) * q.unsqueeze(1), both_pos = p.unsqueeze(2) * p.unsqueeze(1);
  at::Tensor term = (both_neg - c).abs() * (both_pos - c).abs();
  at::Tensor pair = (mask.unsqueeze(2) & mask.unsqueeze(1)).to(term.scalar_type());
  return ((term * pair).sum({1, 2}) / count(mask)).sum();
}

at::Tensor instance_loss(const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor known = targets.ge(0);
  at::Tensor bce = at::binary_cross_entropy_with_logits(logits, targets.clamp_min(0), {}, {}, at::Reduction::None);
  return (bce * known).sum();
}

std::vector<int32_t> pseudo_labels(const std::vector<double>& p, int y, Aggregation a) {
  std::vector<int32_t> l(p.size());
  for (size_t i = 0; i < p.size(); ++i) l[i] = p[i] > 0.5 ? 1 : 0;
  if (p.empty()) return l;
  const bool any_pos = std::find(l.begin(), l.end(), 1) != l.end();
  const bool any_neg = std::find(l.begin(), l.end(), 0) != l.end();
  if (a == Aggregation::max) {
    if (y == 0) std::fill(l.begin(), l.end(), 0);
    else if (!any_pos) l[size_t(std::max_element(p.begin(), p.end()) - p.begin())] = 1;
  } else if (a == Aggregation::min) {
    if (y == 1) std::fill(l.begin(), l.end(), 1);
    else if (!any_neg) l[size_t(std::min_element(p.begin(), p.end()) - p.begin())] = 0;
  }
  return l;
}

}  // namespace kiln::methods::fractal
