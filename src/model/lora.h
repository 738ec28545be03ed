// LoRA on a Llama, PEFT-compatible: which projections get adapters (the recipe's target list,
// matched like PEFT: a module whose name is, or ends in ".<target>"), rank, alpha, dropout, PEFT's
// initialisation, freezing, merge/unmerge.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "model/llama.h"

namespace kiln::model {

using NamedParams = std::vector<std::pair<std::string, at::Tensor>>;

// The projection names LoRA may target; "all-linear" in a target list means all of them.
const std::vector<std::string>& lora_target_names();

// With cfg.enabled: adds adapters to the matching projections and freezes every other parameter
// except those of the modules in cfg.extra_trainable (e.g. embed_tokens, lm_head). Without it:
// no adapters, every parameter trainable (full fine-tuning) except those of the modules in `freeze`
// (model.freeze: e.g. an instruct model tuned with its embeddings kept, as LEP propagation assumes).
// Returns the HF names of the wrapped modules. A target, extra or frozen module that matches
// nothing, or `freeze` with LoRA (which freezes the base already), is an InputError naming the key.
std::vector<std::string> apply_lora(Llama& model, const kiln::LoraConfig& cfg, const std::vector<std::string>& freeze);

bool has_lora(Llama& model);
void merge_lora(Llama& model);    // W += scaling * B A in every adapted projection
void unmerge_lora(Llama& model);

// Parameters with requires_grad, by name, in named_parameters() order (the same on every rank).
NamedParams trainable_parameters(Llama& model);
// Only the lora_A / lora_B weights.
NamedParams lora_parameters(Llama& model);
bool is_lora_param(const std::string& name);
// The decoder layer of a module or parameter name (model.layers.<i>.…), -1 for any other.
int64_t layer_of(const std::string& name);

}  // namespace kiln::model
