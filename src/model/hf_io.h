// Hugging Face and PEFT folders in and out: load a checkpoint (config.json, safetensors single or
// sharded, tokenizer.model), export and load back a PEFT LoRA adapter, export the merged model.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "data/tokenizer.h"
#include "model/llama.h"
#include "model/lora.h"

namespace kiln::model {

at::ScalarType parse_dtype(const std::string& s);  // float32 | bfloat16 | float16 (and fp32/bf16/fp16)
std::string dtype_name(at::ScalarType t);          // as config.json's torch_dtype

// Builds the model from `cfg.path` (config.json + weights) on `device`, weights in cfg.dtype, with
// cfg.attention and cfg.activation_checkpointing applied. Each tensor is copied once, from the
// mapped file into its parameter. Missing, unexpected or mis-shaped tensors are InputErrors naming
// the tensor, the shapes and the file.
Llama load_pretrained(const kiln::ModelConfig& cfg, c10::Device device);
Llama load_pretrained(const std::string& dir, at::ScalarType dtype = at::kFloat, c10::Device device = at::kCPU);
// Fills the base parameters of an existing model from the safetensors of `dir`.
void load_weights(Llama& model, const std::string& dir);

// The tokenizer of the model folder, with BOS/EOS/pad ids from config.json (pad: the config's
// pad_token_id, else EOS) and tokenizer_config.json's add_bos_token; a folder without config.json
// (a tokenizer only) keeps the ids its tokenizer files give.
data::Tokenizer load_tokenizer(const std::string& dir, const LlamaConfig& config);
data::Tokenizer load_tokenizer(const std::string& dir);

struct AdapterExport {
  std::string task_type = "CAUSAL_LM";  // PEFT task type: CAUSAL_LM | SEQ_CLS | TOKEN_CLS | FEATURE_EXTRACTION
  std::string base_model;               // base_model_name_or_path; default: the model's folder
  // Trained modules outside the Llama (a method's head), by the names the HF model class gives them
  // (e.g. score.weight): saved as PEFT saves modules_to_save.
  NamedParams extra;
};

// PEFT layout: adapter_config.json + adapter_model.safetensors with keys
// base_model.model.<HF name> (LoRA A/B, trainable non-LoRA model parameters, `extra`).
void export_adapter(Llama& model, const std::string& dir, const AdapterExport& opts = {});

struct LoadedAdapter {
  kiln::LoraConfig lora;                // as read from adapter_config.json
  std::string task_type, base_model;
  NamedParams extra;                    // tensors that are not parameters of the Llama (heads), by HF name
};
// Applies the adapter's LoRA to `model` (which must have none) and loads its tensors. Tensors of
// modules_to_save that the Llama has (embed_tokens, lm_head) are loaded into it; others returned.
LoadedAdapter load_adapter(Llama& model, const std::string& dir);

// A classification head exported with the merged model, as transformers' Llama*Classification
// classes name it: architecture LlamaForSequenceClassification (`score`) or
// LlamaForTokenClassification (`classifier`), with num_labels / id2label / label2id in config.json.
struct MergedHead {
  std::string architecture;             // empty: none (a causal LM)
  std::vector<std::string> labels;
  NamedParams tensors;                  // e.g. score.weight
};

// Hugging Face layout: config.json, model.safetensors (LoRA merged into the weights, the model
// itself unchanged), tokenizer files copied from the source folder; the head's tensors are added
// to model.safetensors. dtype Undefined: the model's dtype.
void export_merged(Llama& model, const std::string& dir, const MergedHead& head = {},
                   at::ScalarType dtype = at::ScalarType::Undefined);

// A classification head stored in a model folder (a merged export), by tensor name; undefined when
// the folder's safetensors have no such tensor.
at::Tensor load_head_tensor(const std::string& dir, const std::string& name);

std::string model_dir(const Llama& model);  // the folder the model's config.json came from

}  // namespace kiln::model
