// FRACTAL's losses on a batch of ragged bags, padded to [B, S] with a mask of the real sentences
// (as the official code computes them; ../shared/METHODS.md section 4). Every function returns a
// SUM over the bags (the trainer divides by the global bag count), so 1 rank equals N.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::methods::fractal {

enum class Aggregation { max, min, avg };
Aggregation parse_aggregation(const std::string& s);
const char* aggregation_name(Aggregation a);

// The bag's score from its sentences' logits [B, S]: MAX / MIN exactly over the real sentences
// (padding set to -inf / +inf, never a constant), returned as a logit; AVG the mean probability,
// returned as a probability. `mask` [B, S] bool.
at::Tensor aggregate(const at::Tensor& logits, const at::Tensor& mask, Aggregation a);
// The bag's probability (sigmoid of aggregate for MAX / MIN).
at::Tensor bag_probability(const at::Tensor& logits, const at::Tensor& mask, Aggregation a);

// sum over bags of BCE(y_bag, AGG_i p_i); y [B] float 0/1.
at::Tensor bag_loss(const at::Tensor& logits, const at::Tensor& mask, const at::Tensor& y, Aggregation a);

// The cosine prior's target. `one_minus`: s_i = (1 - cos)/2, what the official code computes
// (fractal_acl25 takes Keras' CosineSimilarity loss, which is the NEGATIVE cosine, and adds 1 and
// halves it), so a sentence close to its context is pulled towards 0. `one_plus`: s_i = (1 + cos)/2,
// the paper's stated prior (similar sentences towards 1), kiln's reading before issue 32.
enum class CosTarget { one_minus, one_plus };
CosTarget parse_cos_target(const std::string& s);  // "one_minus" | "one_plus"; InternalError otherwise
const char* cos_target_name(CosTarget t);

// Cosine prior: s_i from cos(e_i, e_context) as `target` says; sum over bags of
// (1/n) sum_i BCE(s_i, p_i). sentences [B, S, H], context [B, H].
at::Tensor cosine_prior(const at::Tensor& logits, const at::Tensor& mask, const at::Tensor& sentences,
                        const at::Tensor& context, CosTarget target = CosTarget::one_plus);

// Correlation prior: c_ij = (1 + pearson(e_i, e_j)) / 2 over the bag's sentence embeddings; sum over
// bags of (1/n) sum_ij |(1-p_i)(1-p_j) - c_ij| * |p_i p_j - c_ij|, i and j over the real sentences.
at::Tensor correlation_prior(const at::Tensor& logits, const at::Tensor& mask, const at::Tensor& sentences);

// Sum of BCE over the sentences whose target is 0 or 1 (targets [B, S] float; < 0: no label).
at::Tensor instance_loss(const at::Tensor& logits, const at::Tensor& targets);

// Pseudo-labels of one bag from its sentence probabilities: p > 0.5, then made consistent with the
// bag label by the most likely change: MAX & y=0: all 0; MAX & y=1 & none positive: the highest
// becomes 1; MIN & y=1: all 1; MIN & y=0 & none negative: the lowest becomes 0. AVG: p > 0.5 as is
// (the official code defines no rule for it).
std::vector<int32_t> pseudo_labels(const std::vector<double>& p, int bag_label, Aggregation a);

}  // namespace kiln::methods::fractal
