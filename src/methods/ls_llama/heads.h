// The classification heads LS-LLaMA puts on the decoder: dropout then a linear map from the hidden
// size to the labels, exported as a PEFT "module to save" under these names:
//   sequence head  `score`       Linear(hidden, labels, bias=False), transformers' name in
//                                LlamaForSequenceClassification
//   token head     `classifier`  Linear(hidden, labels, bias=True), the official LS-LLaMA code's
//                                name (transformers' LlamaForTokenClassification says `score`):
//                                its exports carry kiln's own class (hf_code.h)
// The head computes in float32 whatever the base model's dtype (it is trained, like the LoRA
// matrices, and a bf16 head would round away small updates).
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

#include "model/pooling.h"

namespace kiln::methods::ls_llama {

class HeadImpl : public torch::nn::Module {
 public:
  // Weights normal(0, init_std) (transformers' _init_weights with initializer_range), bias zero.
  HeadImpl(int64_t hidden, int64_t labels, bool bias, double dropout, double init_std, const at::Device& device);
  // [..., hidden] in any floating dtype -> [..., labels] float32. Dropout only in training mode.
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight, bias;  // [labels, hidden], [labels] or undefined
  double dropout;
};
TORCH_MODULE(Head);

// The HF module name of each head, used for parameter names and the PEFT export.
constexpr const char* kSequenceHeadName = "score";
constexpr const char* kTokenHeadName = "classifier";

Head sequence_head(int64_t hidden, int64_t labels, double dropout, double init_std, const at::Device& device);
Head token_head(int64_t hidden, int64_t labels, double dropout, double init_std, const at::Device& device);

// A sequence's class scores [B, labels] from the final hidden states [B, T, H] and the padding mask
// [B, T], pooled in the official classes' order: `last` the head on the last real token's state;
// `max` the head at every position, then each class's largest logit (a maximum does not commute
// with the head); `mean` the head on the mean state (equal to the mean of the logits for a head
// without bias). `pads_pooled`: mean and max over every position, pads included, as the official
// LS-unLLaMA pools them, so a row's scores depend on how much padding its batch gave it.
at::Tensor sequence_logits(HeadImpl& head, const at::Tensor& hidden, const at::Tensor& mask, model::Pooling p,
                           bool pads_pooled);

}  // namespace kiln::methods::ls_llama
