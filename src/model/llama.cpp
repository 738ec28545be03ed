#include "model/llama.h"

#include <torch/csrc/autograd/custom_function.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "model/autocast_state.h"

namespace kiln::model {

AttentionMode parse_attention_mode(const std::string& s) {
  if (s == "causal") return AttentionMode::causal;
  if (s == "bidirectional") return AttentionMode::bidirectional;
  input_error("attention mode `{}`: must be causal or bidirectional", s);
}

// ---------------------------------------------------------------- Linear with LoRA

LinearImpl::LinearImpl(int64_t in, int64_t out, bool has_bias, const at::TensorOptions& opts)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", at::empty({out, in}, opts));
  if (has_bias) bias = register_parameter("bias", at::zeros({out}, opts));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  at::Tensor y = at::linear(x, weight, bias);
  if (has_lora() && !merged_) {
    const at::Tensor& a = lora_A->weight;
    at::Tensor xa = x.to(a.scalar_type());  // a no-op unless the base runs in bf16/fp16
    if (lora_dropout > 0) xa = at::dropout(xa, lora_dropout, is_training());
    at::Tensor d = at::linear(at::linear(xa, a), lora_B->weight) * lora_scaling;
    y = y + (d.scalar_type() == y.scalar_type() ? d : d.to(y.scalar_type()));
  }
  return y;
}

void LinearImpl::add_lora(int64_t r, double alpha, double dropout) {
  KILN_CHECK(!has_lora(), "LoRA added twice to a {}x{} projection", out_features, in_features);
  KILN_CHECK(r > 0, "LoRA rank must be positive, got {}", r);
  auto opts = weight.options().dtype(at::kFloat);
  at::Tensor a = at::empty({r, in_features}, opts);
  // PEFT's reset_lora_parameters: A as nn.Linear's default init (Kaiming-uniform, a = sqrt(5)),
  // B zero, so the adapted model starts exactly at the base model.
  torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  lora_A = register_module("lora_A", Weight(a));
  lora_B = register_module("lora_B", Weight(at::zeros({out_features, r}, opts)));
  lora_r = r;
  lora_alpha = alpha;
  lora_scaling = alpha / double(r);
  lora_dropout = dropout;
}

at::Tensor LinearImpl::delta_weight() const {
  KILN_CHECK(has_lora(), "delta_weight without LoRA");
  at::NoGradGuard no_grad;
  return (at::matmul(lora_B->weight.to(at::kFloat), lora_A->weight.to(at::kFloat)) * lora_scaling)
      .to(weight.scalar_type());
}

void LinearImpl::merge() {
  if (!has_lora() || merged_) return;
  at::NoGradGuard no_grad;
  if (weight.scalar_type() == at::kFloat)
    weight.add_(delta_weight());
  else  // add in float32, round once
    weight.copy_(weight.to(at::kFloat) + delta_weight().to(at::kFloat));
  merged_ = true;
}

void LinearImpl::unmerge() {
  if (!has_lora() || !merged_) return;
  at::NoGradGuard no_grad;
  if (weight.scalar_type() == at::kFloat)
    weight.sub_(delta_weight());
  else
    weight.copy_(weight.to(at::kFloat) - delta_weight().to(at::kFloat));
  merged_ = false;
}

// ---------------------------------------------------------------- norms, embeddings

RMSNormImpl::RMSNormImpl(int64_t dim, double e, const at::TensorOptions& opts) : eps(e) {
  weight = register_parameter("weight", at::ones({dim}, opts));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  // As transformers' LlamaRMSNorm: normalise in float32, scale in the input dtype.
  at::Tensor xf = x.to(at::kFloat);
  xf = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * xf.to(x.scalar_type());
}

EmbeddingImpl::EmbeddingImpl(int64_t num, int64_t dim, const at::TensorOptions& opts) {
  weight = register_parameter("weight", at::empty({num, dim}, opts));
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& ids) { return at::embedding(weight, ids); }

// ---------------------------------------------------------------- attention

namespace {

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

}  // namespace

AttentionImpl::AttentionImpl(const LlamaConfig& c, const at::TensorOptions& opts)
    : heads(c.num_attention_heads), kv_heads(c.num_key_value_heads), head_dim(c.dim_per_head()) {
  q_proj = register_module("q_proj", Linear(c.hidden_size, heads * head_dim, c.attention_bias, opts));
  k_proj = register_module("k_proj", Linear(c.hidden_size, kv_heads * head_dim, c.attention_bias, opts));
  v_proj = register_module("v_proj", Linear(c.hidden_size, kv_heads * head_dim, c.attention_bias, opts));
  o_proj = register_module("o_proj", Linear(heads * head_dim, c.hidden_size, c.attention_bias, opts));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const AttentionInputs& in, LayerCache* cache, int64_t past) {
  const int64_t B = x.size(0), T = x.size(1), rep = heads / kv_heads;
  // Query heads grouped by the key/value head they share: head h = kv * rep + r, as repeat_kv does.
  at::Tensor q = q_proj(x).view({B, T, kv_heads, rep, head_dim}).permute({0, 2, 3, 1, 4});  // [B,KV,rep,T,hd]
  at::Tensor k = k_proj(x).view({B, T, kv_heads, head_dim}).transpose(1, 2);                 // [B,KV,T,hd]
  at::Tensor v = v_proj(x).view({B, T, kv_heads, head_dim}).transpose(1, 2);
  const at::Tensor cos = in.cos.unsqueeze(1), sin = in.sin.unsqueeze(1);  // [B,1,T,hd]
  k = k * cos + rotate_half(k) * sin;
  q = q * cos.unsqueeze(1) + rotate_half(q) * sin.unsqueeze(1);
  if (cache) {
    cache->k.narrow(2, past, T).copy_(k);
    cache->v.narrow(2, past, T).copy_(v);
    k = cache->k.narrow(2, 0, past + T);
    v = cache->v.narrow(2, 0, past + T);
  }
  // scaled_dot_product_attention picks a fused kernel (flash or memory-efficient, on CPU and GPU):
  // is_causal alone where the mask is exactly causal (flash), else the additive mask. Query heads
  // share their key/value head (enable_gqa), so K and V are not copied per query head.
  at::Tensor mask;
  if (in.mask.defined()) {
    // The float32 mask's -FLT_MAX would round to -inf in half precision: use the dtype's own lowest.
    const auto st = q.scalar_type();
    const double lowest = st == at::kHalf ? -65504.0 : st == at::kBFloat16 ? -3.38e38 : -3.4e38;
    at::Tensor m = in.mask.squeeze(2);  // [B,1,T,S]
    mask = at::zeros(m.sizes(), q.options()).masked_fill(m < 0, lowest);
  }
  at::Tensor out = at::scaled_dot_product_attention(
      q.reshape({B, heads, T, head_dim}), k, v, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt, 0.0,
      in.causal && !mask.defined(), std::nullopt, rep > 1);
  out = out.view({B, kv_heads, rep, T, head_dim});
  out = out.permute({0, 3, 1, 2, 4}).reshape({B, T, heads * head_dim});
  return o_proj(out);
}

MLPImpl::MLPImpl(const LlamaConfig& c, const at::TensorOptions& opts) {
  gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, opts));
  up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias, opts));
  down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, c.mlp_bias, opts));
}

at::Tensor MLPImpl::forward(const at::Tensor& x) { return down_proj(at::silu(gate_proj(x)) * up_proj(x)); }

DecoderLayerImpl::DecoderLayerImpl(const LlamaConfig& c, const at::TensorOptions& opts) {
  self_attn = register_module("self_attn", Attention(c, opts));
  mlp = register_module("mlp", MLP(c, opts));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, opts));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, opts));
}

at::Tensor DecoderLayerImpl::forward(const at::Tensor& x, const AttentionInputs& in, LayerCache* cache, int64_t past) {
  at::Tensor h = x + self_attn(input_layernorm(x), in, cache, past);
  return h + mlp(post_attention_layernorm(h));
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c, const at::TensorOptions& opts) {
  embed_tokens = register_module("embed_tokens", Embedding(c.vocab_size, c.hidden_size, opts));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layer_list.emplace_back(c, opts);
    layers->push_back(layer_list.back());
  }
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, opts));
}

// ---------------------------------------------------------------- activation checkpointing

namespace {

using torch::autograd::AutogradContext;

using torch::autograd::variable_list;

std::vector<at::Tensor> trainable_params(torch::nn::Module& m) {
  std::vector<at::Tensor> out;
  for (auto& p : m.parameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}

// Runs a decoder layer without keeping its activations, and in backward runs it again (same
// dropout masks, same autocast state) to get the gradients of its input and trainable parameters.
// The layer's parameters reach .grad in backward's own recomputed graph (as in PyTorch's reentrant
// checkpoint), through their AccumulateGrad nodes, so each gradient hook (bucketed all-reduce) runs
// once per gradient, as without checkpointing. They are not inputs of the function: the outer
// graph would then call their hooks a second time (with an undefined gradient). `anchor`, an empty
// tensor that requires grad when the layer trains, makes the output require grad even when the
// layer's input does not (the first layer under LoRA: frozen embeddings).
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static variable_list forward(AutogradContext* ctx, at::Tensor x, at::Tensor anchor, int64_t n_params,
                               int64_t layer_ptr, at::Tensor cos, at::Tensor sin, c10::optional<at::Tensor> mask,
                               bool causal) {
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(layer_ptr);
    ctx->saved_data["layer"] = layer_ptr;
    ctx->saved_data["x_requires_grad"] = x.requires_grad();
    ctx->saved_data["n_params"] = n_params;
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    if (mask) ctx->saved_data["mask"] = *mask;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["autocast"] = autocast_enabled(c10::DeviceType::CUDA);
    ctx->saved_data["autocast_cpu"] = autocast_enabled(c10::DeviceType::CPU);
    auto gen = at::globalContext().defaultGenerator(x.device());
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      ctx->saved_data["rng"] = gen.get_state();
    }
    ctx->save_for_backward({x});
    AttentionInputs in{cos, sin, mask ? *mask : at::Tensor(), causal};
    return {layer->forward(x, in)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    const bool x_grad = ctx->saved_data["x_requires_grad"].toBool();
    const int64_t n_params = ctx->saved_data["n_params"].toInt();
    AttentionInputs in{ctx->saved_data["cos"].toTensor(), ctx->saved_data["sin"].toTensor(), at::Tensor(),
                       ctx->saved_data["causal"].toBool()};
    if (ctx->saved_data.count("mask")) in.mask = ctx->saved_data["mask"].toTensor();
    at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(x_grad);
    std::vector<at::Tensor> params = trainable_params(*layer);
    KILN_CHECK(int64_t(params.size()) == n_params, "trainable parameters changed between forward and backward");

    at::Tensor y;
    {
      at::AutoGradMode grad_on(true);
      const bool ac = autocast_enabled(c10::DeviceType::CUDA), ac_cpu = autocast_enabled(c10::DeviceType::CPU);
      set_autocast_enabled(c10::DeviceType::CUDA, ctx->saved_data["autocast"].toBool());
      set_autocast_enabled(c10::DeviceType::CPU, ctx->saved_data["autocast_cpu"].toBool());
      // No weight cache in the recompute: autocast caches the 16-bit copy of each weight by tensor,
      // and this runs after the step's autocast scope has cleared its cache, so the copies made here
      // would stay and be used by the next step's forward, after the optimizer changed the weights.
      const bool cache = at::autocast::is_autocast_cache_enabled();
      at::autocast::set_autocast_cache_enabled(false);
      auto gen = at::globalContext().defaultGenerator(x.device());
      at::Tensor rng_now;
      {
        std::lock_guard<std::mutex> lock(gen.mutex());
        rng_now = gen.get_state();
        gen.set_state(ctx->saved_data["rng"].toTensor());
      }
      y = layer->forward(x, in);
      {
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(rng_now);
      }
      at::autocast::set_autocast_cache_enabled(cache);
      set_autocast_enabled(c10::DeviceType::CUDA, ac);
      set_autocast_enabled(c10::DeviceType::CPU, ac_cpu);
    }
    // backward(), not grad(..., params): the recomputed graph puts the parameters' gradients into
    // .grad through their own AccumulateGrad nodes, where their hooks (GradSync's) run once. With
    // grad() libtorch runs a leaf's hooks on the captured gradient as well, and returning it as this
    // function's output ran them a second time: every gradient was added twice to its bucket, the
    // second time racing the bucket's all-reduce (2 ranks with checkpointing != 1 rank).
    torch::autograd::backward({y}, {grad_out[0]}, /*retain_graph=*/false, /*create_graph=*/false);
    // x, then anchor, parameter count, layer pointer, cos, sin, mask, causal: no gradients.
    variable_list result{x_grad ? x.grad() : at::Tensor()};
    result.resize(8);
    return result;
  }
};

}  // namespace

// ---------------------------------------------------------------- the model

LlamaImpl::LlamaImpl(LlamaConfig c, at::ScalarType dtype, at::Device device) : config_(std::move(c)) {
  auto opts = at::TensorOptions().dtype(dtype).device(device);
  model = register_module("model", LlamaModel(config_, opts));
  if (!config_.tie_word_embeddings)
    lm_head = register_module("lm_head", Linear(config_.hidden_size, config_.vocab_size, false, opts));
  inv_freq_ = config_.inv_freq();
}

at::Tensor LlamaImpl::lm_head_weight() const {
  return lm_head.is_empty() ? model->embed_tokens->weight : lm_head->weight;
}

at::Tensor LlamaImpl::logits(const at::Tensor& hidden) {
  return lm_head.is_empty() ? at::linear(hidden, model->embed_tokens->weight) : lm_head(hidden);
}

std::vector<std::pair<std::string, Linear>> LlamaImpl::linears() {
  std::vector<std::pair<std::string, Linear>> out;
  for (const auto& item : named_modules("", /*include_self=*/false))
    if (auto l = std::dynamic_pointer_cast<LinearImpl>(item.value())) out.emplace_back(item.key(), Linear(l));
  return out;
}

void LlamaImpl::init_weights(double std) {
  at::NoGradGuard no_grad;
  for (auto& [name, l] : linears()) {
    l->weight.normal_(0, std);
    if (l->bias.defined()) l->bias.zero_();
  }
  model->embed_tokens->weight.normal_(0, std);
  for (const auto& item : named_modules("", false))
    if (auto n = std::dynamic_pointer_cast<RMSNormImpl>(item.value())) n->weight.fill_(1.0);
}

AttentionInputs LlamaImpl::attention_inputs(const at::Tensor& positions, const at::Tensor& key_mask, int64_t T,
                                            int64_t past, bool causal) const {
  AttentionInputs in;
  const auto dev = positions.device();
  // Angles in float64: positions times frequencies lose digits in float32 at long contexts.
  at::Tensor inv = at::tensor(inv_freq_, at::TensorOptions().dtype(at::kDouble)).to(dev);
  at::Tensor freqs = positions.to(at::kDouble).unsqueeze(-1) * inv;  // [B,T,hd/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  const auto dt = dtype();
  in.cos = emb.cos().to(dt);
  in.sin = emb.sin().to(dt);
  const int64_t S = past + T;
  if (causal && past == 0 && !key_mask.defined()) {
    in.causal = true;  // no mask tensor: SDPA's causal kernels
    return in;
  }
  at::Tensor allowed;  // [B or 1, T, S] bool
  if (causal && !(T == 1 && past > 0)) {  // one new token after a cache sees every cached position
    at::Tensor q = at::arange(past, past + T, at::TensorOptions().dtype(at::kLong).device(dev)).unsqueeze(1);
    at::Tensor k = at::arange(S, at::TensorOptions().dtype(at::kLong).device(dev)).unsqueeze(0);
    allowed = (k <= q).unsqueeze(0);
  }
  if (key_mask.defined()) {
    at::Tensor km = (key_mask != 0).unsqueeze(1);  // [B,1,S]
    allowed = allowed.defined() ? at::logical_and(allowed, km) : km.expand({key_mask.size(0), T, S});
  }
  if (allowed.defined()) {
    // A large finite negative rather than -inf: a row with nothing to attend to (a padding query)
    // softmaxes to a uniform row instead of NaN, and its output is never used.
    const double neg = -std::numeric_limits<float>::max();
    in.mask = at::zeros(allowed.sizes(), at::TensorOptions().dtype(at::kFloat).device(dev))
                  .masked_fill(allowed.logical_not(), neg)
                  .unsqueeze(1)
                  .unsqueeze(1);  // [B,1,1,T,S]
  }
  return in;
}

at::Tensor LlamaImpl::run_layers(at::Tensor h, const AttentionInputs& in, KVCache* cache, int64_t past) {
  const bool ckpt = checkpointing_ && is_training() && at::GradMode::is_enabled() && cache == nullptr;
  for (size_t i = 0; i < model->layer_list.size(); ++i) {
    auto& layer = model->layer_list[i];
    if (ckpt) {
      auto params = trainable_params(*layer);
      c10::optional<at::Tensor> mask;
      if (in.mask.defined()) mask = in.mask;
      if (params.empty() && !h.requires_grad()) {
        h = layer->forward(h, in);  // nothing to differentiate: no graph is built anyway
      } else {
        at::Tensor anchor = at::empty({0}, h.options().dtype(at::kFloat)).requires_grad_(!params.empty());
        h = CheckpointedLayer::apply(h, anchor, int64_t(params.size()), reinterpret_cast<int64_t>(layer.get()),
                                     in.cos, in.sin, mask, in.causal)[0];
      }
    } else {
      h = layer->forward(h, in, cache ? &cache->layers[i] : nullptr, past);
    }
  }
  return h;
}

at::Tensor LlamaImpl::hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  KILN_CHECK(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong, "input_ids must be [B, T] int64, got {} {}",
             c10::toString(input_ids.scalar_type()), c10::str(input_ids.sizes()));
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  at::Tensor positions, key_mask;
  if (attention_mask.defined()) {
    KILN_CHECK(attention_mask.sizes() == input_ids.sizes(), "attention_mask {} does not match input_ids {}",
               c10::str(attention_mask.sizes()), c10::str(input_ids.sizes()));
    key_mask = attention_mask.to(at::kLong);
    positions = (key_mask.cumsum(1) - 1).clamp_min(0);
  } else {
    positions = at::arange(T, input_ids.options()).unsqueeze(0).expand({B, T});
  }
  AttentionInputs in = attention_inputs(positions, key_mask, T, 0, mode_ == AttentionMode::causal);
  at::Tensor h = model->embed_tokens(input_ids);
  h = run_layers(h, in, nullptr, 0);
  return model->norm(h);
}

KVCache LlamaImpl::new_cache(int64_t batch, int64_t capacity) const {
  KVCache c;
  c.capacity = capacity;
  auto opts = at::TensorOptions().dtype(dtype()).device(device());
  const int64_t kv = config_.num_key_value_heads, hd = config_.dim_per_head();
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i)
    c.layers.push_back({at::zeros({batch, kv, capacity, hd}, opts), at::zeros({batch, kv, capacity, hd}, opts)});
  c.mask = at::ones({batch, capacity}, at::TensorOptions().dtype(at::kLong).device(device()));
  return c;
}

at::Tensor LlamaImpl::hidden_states_cached(const at::Tensor& input_ids, KVCache& cache, const at::Tensor& attention_mask) {
  KILN_CHECK(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong, "input_ids must be [B, T] int64");
  const int64_t T = input_ids.size(1), past = cache.length;
  KILN_CHECK(past + T <= cache.capacity, "KV cache of {} positions cannot take {} more after {}", cache.capacity, T,
             past);
  if (attention_mask.defined()) cache.mask.narrow(1, past, T).copy_(attention_mask);
  at::Tensor full = cache.mask.narrow(1, 0, past + T);
  at::Tensor positions = (full.cumsum(1) - 1).clamp_min(0).narrow(1, past, T);
  at::Tensor key_mask;
  if ((full == 0).any().item<bool>()) key_mask = full;
  AttentionInputs in = attention_inputs(positions, key_mask, T, past, true);
  at::Tensor h = model->embed_tokens(input_ids);
  h = run_layers(h, in, &cache, past);
  cache.length += T;
  return model->norm(h);
}

}  // namespace kiln::model
