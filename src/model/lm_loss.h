// The causal-LM loss without a batch's full [tokens, vocabulary] logits: only the positions that
// have a target go through the LM head, `chunk_rows` of them at a time, and the backward pass
// recomputes each chunk's logits instead of keeping them. With LLaMA-3's 128,256-token vocabulary a
// batch of 4 x 2,048 tokens would otherwise hold 4.2 GB of float32 logits and as much again for
// their gradient. Same loss and gradients as the full logits, within float32 rounding
// (tests/model/test_lm_loss.cpp).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "model/llama.h"

namespace kiln::model {

struct LmLoss {
  at::Tensor sum;             // summed cross-entropy over the targets (float32 scalar, differentiable)
  int64_t targets = 0;
  at::Tensor correct_per_row;  // [B] argmax == target, on the CPU (when asked for)
  at::Tensor targets_per_row;  // [B] targets per row, on the CPU (when asked for)
};

// Rows of logits per chunk that keep one chunk's float32 logits near 64 MiB (at least 64 rows).
int64_t auto_chunk_rows(int64_t vocab);

// hidden [B, T, H]: the final hidden states of the positions that predict; labels [B, T]: the
// token each predicts, `ignore` where there is none. chunk_rows <= 0 computes the whole batch's
// logits at once (kiln's way before; kept as the reference and for measuring the difference).
// `row_stats` fills correct_per_row / targets_per_row (evaluation).
LmLoss lm_loss(Llama& model, const at::Tensor& hidden, const at::Tensor& labels, int64_t ignore, int64_t chunk_rows,
               bool row_stats);

}  // namespace kiln::model
