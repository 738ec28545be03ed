// Pooling of the final hidden states into one vector per sequence (LS-LLaMA, section 3 of the
// paper; FRACTAL's and regress's sentence embeddings). Padding may sit on either side (data.padding_side), so every mode reads the attention
// mask instead of assuming where the real tokens are.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

namespace kiln::model {

enum class Pooling { last, mean, max };

// "last" | "mean" | "max"; anything else is an InputError naming `where` (e.g. "r.yaml:7: key `task.pooling`").
Pooling parse_pooling(const std::string& s, const std::string& where = "task.pooling");
const char* pooling_name(Pooling p);

// Position of the last real token of each row: [B] int64. Right padding gives length - 1, left
// padding gives T - 1. A row without any real token is an InternalError (collate always keeps BOS).
at::Tensor last_token_index(const at::Tensor& mask);

// hidden [B, T, H], mask [B, T] (non-zero = real token; any integer or bool dtype) -> [B, H] in the
// dtype of `hidden`. last: the hidden state of the last real token; mean: the mean over real tokens;
// max: the element-wise maximum over real tokens. Padding never contributes to any of them, so a
// row's result does not depend on how much padding the batch gave it.
at::Tensor pool(const at::Tensor& hidden, const at::Tensor& mask, Pooling p);

}  // namespace kiln::model
