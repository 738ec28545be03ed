// LLaMA-family decoder (LLaMA 1/2/3, Mistral): token embeddings, RMSNorm, rotary embeddings,
// grouped-query attention, SwiGLU MLP, final norm, LM head tied or untied. The module tree mirrors
// transformers' LlamaForCausalLM, so named_parameters() are exactly the Hugging Face names
// (model.layers.0.self_attn.q_proj.weight, ...) and a LoRA adapter adds PEFT's names under the
// wrapped projection (...q_proj.lora_A.weight). Checkpoints and exports use these names directly.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/hf_config.h"

namespace kiln::model {

enum class AttentionMode { causal, bidirectional };
AttentionMode parse_attention_mode(const std::string& s);  // "causal" | "bidirectional"; InputError otherwise

// A module holding one parameter named "weight": the pieces of a LoRA adapter.
class WeightImpl : public torch::nn::Module {
 public:
  explicit WeightImpl(at::Tensor w) { weight = register_parameter("weight", std::move(w)); }
  at::Tensor weight;
};
TORCH_MODULE(Weight);

// nn.Linear (y = x W^T + b) with an optional LoRA adapter: y + scaling * B(A(dropout(x))).
// The adapter's A and B are kept in float32 whatever the base dtype, as PEFT does.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);

  // PEFT initialisation: A Kaiming-uniform (a = sqrt(5)), B zero. Throws if an adapter exists.
  void add_lora(int64_t r, double alpha, double dropout);
  bool has_lora() const { return !lora_A.is_empty(); }
  // W += scaling * B A (computed in float32), so forward no longer needs the adapter path; unmerge
  // subtracts it again. Both are no-ops when already in the requested state.
  void merge();
  void unmerge();
  bool merged() const { return merged_; }
  at::Tensor delta_weight() const;  // scaling * B A in the base dtype

  int64_t in_features, out_features;
  at::Tensor weight, bias;
  Weight lora_A{nullptr}, lora_B{nullptr};
  int64_t lora_r = 0;
  double lora_alpha = 0, lora_scaling = 0, lora_dropout = 0;

 private:
  bool merged_ = false;
};
TORCH_MODULE(Linear);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t num, int64_t dim, const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& ids);
  at::Tensor weight;
};
TORCH_MODULE(Embedding);

// Keys and values of one layer for incremental decoding: [B, kv_heads, capacity, head_dim], of which
// the first `length` positions are filled.
struct LayerCache {
  at::Tensor k, v;
};
struct KVCache {
  std::vector<LayerCache> layers;
  int64_t length = 0;    // positions already cached
  int64_t capacity = 0;
  at::Tensor mask;       // [B, capacity] 1 = real token, 0 = padding (int64), covering all positions
};

// Per-forward inputs shared by every layer.
struct AttentionInputs {
  at::Tensor cos, sin;    // [B, T, head_dim] in the compute dtype
  at::Tensor mask;        // additive [B, 1, 1, T, S] (0 or a large negative), or undefined:
  bool causal = false;    // ... then causal (each position sees itself and the ones before) or all
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const LlamaConfig& c, const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x, const AttentionInputs& in, LayerCache* cache, int64_t past);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t heads, kv_heads, head_dim;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const LlamaConfig& c, const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const LlamaConfig& c, const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x, const AttentionInputs& in, LayerCache* cache = nullptr, int64_t past = 0);
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

// transformers' LlamaModel: the part under the "model." prefix.
class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const LlamaConfig& c, const at::TensorOptions& opts);
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  std::vector<DecoderLayer> layer_list;  // the same modules, typed
};
TORCH_MODULE(LlamaModel);

class LlamaImpl : public torch::nn::Module {
 public:
  // Parameters are allocated uninitialised in `dtype` on `device`: load_pretrained fills them from
  // the checkpoint (one copy), init_weights() fills them for a model trained from scratch.
  LlamaImpl(LlamaConfig c, at::ScalarType dtype = at::kFloat, at::Device device = at::kCPU);

  // input_ids [B, T] int64; attention_mask [B, T], 1 = token, 0 = padding (undefined: no padding).
  // Returns [B, T, hidden] after the final norm. Positions count real tokens only, so a left-padded
  // sequence gets the same positions (and logits) as the same sequence unpadded.
  at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask = {});
  at::Tensor logits(const at::Tensor& hidden);  // [B, T, vocab]
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}) {
    return logits(hidden_states(input_ids, attention_mask));
  }

  // Incremental decoding: appends input_ids [B, T] (and their mask, undefined = all real) to the
  // cache and returns the hidden states of the new positions. Always causal.
  KVCache new_cache(int64_t batch, int64_t capacity) const;
  at::Tensor hidden_states_cached(const at::Tensor& input_ids, KVCache& cache, const at::Tensor& attention_mask = {});

  void set_attention_mode(AttentionMode m) { mode_ = m; }
  AttentionMode attention_mode() const { return mode_; }
  // Recompute each decoder layer in backward instead of keeping its activations (training only).
  void set_activation_checkpointing(bool on) { checkpointing_ = on; }
  bool activation_checkpointing() const { return checkpointing_; }

  // transformers' _init_weights: normal(0, std) for linear and embedding weights, zero biases, unit norms.
  void init_weights(double std = 0.02);

  const LlamaConfig& config() const { return config_; }
  at::ScalarType dtype() const { return model->embed_tokens->weight.scalar_type(); }
  at::Device device() const { return model->embed_tokens->weight.device(); }
  // The output projection's weight: lm_head.weight, or the embeddings when tied.
  at::Tensor lm_head_weight() const;
  // Every projection by its HF module name (model.layers.0.self_attn.q_proj, ..., lm_head).
  std::vector<std::pair<std::string, Linear>> linears();

  LlamaModel model{nullptr};
  Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  AttentionInputs attention_inputs(const at::Tensor& positions, const at::Tensor& key_mask, int64_t q_len,
                                   int64_t past, bool causal) const;
  at::Tensor run_layers(at::Tensor h, const AttentionInputs& in, KVCache* cache, int64_t past);

  LlamaConfig config_;
  std::vector<double> inv_freq_;
  AttentionMode mode_ = AttentionMode::causal;
  bool checkpointing_ = false;
};
TORCH_MODULE(Llama);

}  // namespace kiln::model
