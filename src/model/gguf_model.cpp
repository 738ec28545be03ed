#include "model/gguf_model.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/files.h"
#include "data/gguf_vocab.h"
#include "model/hf_config.h"
#include "model/hf_io.h"
#include "model/safetensors.h"

namespace kiln::model {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

float half(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return float(c10::Half(bits, c10::Half::from_bits()));
}

// ggml-quants.c get_scale_min_k4: Q4_K's eight 6-bit scales and mins packed in 12 bytes.
void scale_min_k4(int j, const uint8_t* q, uint8_t& d, uint8_t& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// One block of each type, as ggml's dequantize_row_* (the reference C code) computes it.
void block_q4_0(const uint8_t* b, float* y) {
  const float d = half(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = float((qs[j] & 0x0F) - 8) * d;
    y[j + 16] = float((qs[j] >> 4) - 8) * d;
  }
}
void block_q4_1(const uint8_t* b, float* y) {
  const float d = half(b), m = half(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(qs[j] & 0x0F) * d + m;
    y[j + 16] = float(qs[j] >> 4) * d + m;
  }
}
void block_q8_0(const uint8_t* b, float* y) {
  const float d = half(b);
  const auto* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = float(qs[j]) * d;
}
void block_q4_k(const uint8_t* b, float* y) {
  const float d = half(b), dmin = half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  int is = 0;
  for (int j = 0; j < 256; j += 64) {
    uint8_t sc, m;
    scale_min_k4(is, scales, sc, m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, sc, m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}
void block_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half(b + 208);
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int8_t q1 = int8_t((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int8_t q2 = int8_t((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int8_t q3 = int8_t((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int8_t q4 = int8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * float(sc[is + 0]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

using BlockFn = void (*)(const uint8_t*, float*);
BlockFn block_fn(uint32_t type) {
  switch (type) {
    case gguf::Q4_0: return block_q4_0;
    case gguf::Q4_1: return block_q4_1;
    case gguf::Q8_0: return block_q8_0;
    case gguf::Q4_K: return block_q4_k;
    case gguf::Q6_K: return block_q6_k;
    default: return nullptr;
  }
}

}  // namespace

bool gguf_can_dequantize(uint32_t type) {
  return type == gguf::F32 || type == gguf::F16 || type == gguf::BF16 || block_fn(type) != nullptr;
}

void gguf_dequantize(uint32_t type, const uint8_t* src, uint64_t n, float* dst, const std::string& what) {
  if (!gguf_can_dequantize(type))
    input_error("{}: tensor type {} is not supported (kiln reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)", what,
                gguf::type_name(type));
  const gguf::TypeInfo ti = gguf::type_info(type);
  KILN_CHECK(n % ti.block == 0, "{}: {} elements are not whole {} blocks", what, n, ti.name);
  if (type == gguf::F32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  const int64_t blocks = int64_t(n / ti.block);
  const BlockFn fn = block_fn(type);
  at::parallel_for(0, blocks, 4096, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const uint8_t* p = src + uint64_t(b) * ti.bytes;
      float* y = dst + uint64_t(b) * ti.block;
      if (type == gguf::F16) {
        *y = half(p);
      } else if (type == gguf::BF16) {
        uint16_t bits;
        std::memcpy(&bits, p, 2);
        *y = float(c10::BFloat16(bits, c10::BFloat16::from_bits()));
      } else {
        fn(p, y);
      }
    }
  });
}

at::Tensor gguf_tensor(const gguf::File& f, const gguf::Tensor& t) {
  std::vector<int64_t> shape(t.ne.rbegin(), t.ne.rend());
  at::Tensor out = at::empty(shape, at::kFloat);
  gguf_dequantize(t.type, f.data(t), t.elements(), out.data_ptr<float>(), fmt::format("{}: tensor `{}`", f.path(), t.name));
  return out;
}

bool gguf_can_quantize(uint32_t type) {
  return type == gguf::F32 || type == gguf::F16 || type == gguf::BF16 || type == gguf::Q8_0;
}

std::vector<uint8_t> gguf_quantize(uint32_t type, const at::Tensor& t) {
  KILN_CHECK(gguf_can_quantize(type), "kiln does not write {}", gguf::type_name(type));
  at::Tensor x = t.detach().to(at::kCPU).to(at::kFloat).contiguous();
  const int64_t n = x.numel();
  std::vector<uint8_t> out;
  if (type == gguf::F32 || type == gguf::F16 || type == gguf::BF16) {
    // torch's float to half / bfloat16 conversions round to nearest even, as ggml's do.
    at::Tensor c = type == gguf::F32 ? x : x.to(type == gguf::F16 ? at::kHalf : at::kBFloat16);
    out.resize(size_t(c.numel()) * c.element_size());
    std::memcpy(out.data(), c.data_ptr(), out.size());
    return out;
  }
  KILN_CHECK(n % 32 == 0, "Q8_0 needs whole blocks of 32, got {} elements", n);
  out.resize(size_t(n / 32) * 34);
  const float* p = x.data_ptr<float>();
  // ggml quantize_row_q8_0_ref: d = max|x| / 127, q = round(x / d), d stored as F16.
  at::parallel_for(0, n / 32, 4096, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* v = p + b * 32;
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(v[j]));
      const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
      uint8_t* o = out.data() + b * 34;
      const uint16_t dh = c10::Half(d).x;
      std::memcpy(o, &dh, 2);
      for (int j = 0; j < 32; ++j) o[2 + j] = uint8_t(int8_t(std::roundf(v[j] * id)));
    }
  });
  return out;
}

at::Tensor rope_rows_from_gguf(const at::Tensor& w, int64_t heads) {
  auto s = w.sizes().vec();
  const int64_t rows = s[0];
  std::vector<int64_t> v = {heads, rows / heads / 2, 2};
  v.insert(v.end(), s.begin() + 1, s.end());
  return w.reshape(v).transpose(1, 2).reshape(s).contiguous();
}

at::Tensor rope_rows_to_gguf(const at::Tensor& w, int64_t heads) {
  auto s = w.sizes().vec();
  const int64_t rows = s[0];
  std::vector<int64_t> v = {heads, 2, rows / heads / 2};
  v.insert(v.end(), s.begin() + 1, s.end());
  return w.reshape(v).transpose(1, 2).reshape(s).contiguous();
}

namespace {

// llama.cpp's tensor names (llama-arch.cpp LLM_TENSOR_NAMES for LLM_ARCH_LLAMA) against
// Hugging Face's; `{}` is the block number.
const std::vector<std::pair<std::string, std::string>>& block_names() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"attn_norm", "input_layernorm"},         {"ffn_norm", "post_attention_layernorm"},
      {"attn_q", "self_attn.q_proj"},           {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},           {"attn_output", "self_attn.o_proj"},
      {"ffn_gate", "mlp.gate_proj"},            {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},
  };
  return names;
}

struct Mapped {
  std::string hf;
  int rope_heads_of = 0;  // 1: q (attention heads), 2: k (kv heads)
};

// The Hugging Face name of a GGUF tensor; empty when llama.cpp's LLaMA has no such tensor.
Mapped hf_name(const std::string& g) {
  if (g == "token_embd.weight") return {"model.embed_tokens.weight"};
  if (g == "output_norm.weight") return {"model.norm.weight"};
  if (g == "output.weight") return {"lm_head.weight"};
  static const std::regex re(R"(blk\.(\d+)\.([a-z_]+)\.(weight|bias))");
  std::smatch m;
  if (!std::regex_match(g, m, re)) return {};
  for (const auto& [gn, hn] : block_names())
    if (m[2] == gn)
      return {fmt::format("model.layers.{}.{}.{}", m[1].str(), hn, m[3].str()), gn == "attn_q" ? 1 : gn == "attn_k" ? 2 : 0};
  return {};
}

}  // namespace

void import_gguf(const std::string& file, const std::string& out_dir, const GgufImportOptions& opts) {
  if (opts.dtype != at::kFloat && opts.dtype != at::kBFloat16)
    input_error("--dtype {}: kiln import gguf writes float32 or bfloat16", dtype_name(opts.dtype));
  if (fs::exists(out_dir) && !(fs::is_directory(out_dir) && fs::is_empty(out_dir)))
    input_error("--out {}: exists and is not an empty folder (kiln import never overwrites)", out_dir);
  gguf::File f(file);
  const std::string arch = f.str("general.architecture");
  if (arch != "llama" && arch != "mistral")
    input_error("{}: general.architecture = \"{}\" is not supported (kiln imports llama and mistral)", file, arch);
  auto key = [&](const std::string& k) { return arch + "." + k; };

  LlamaConfig c;
  c.model_type = "llama";
  c.num_hidden_layers = f.integer(key("block_count"));
  c.hidden_size = f.integer(key("embedding_length"));
  c.intermediate_size = f.integer(key("feed_forward_length"));
  c.num_attention_heads = f.integer(key("attention.head_count"));
  c.num_key_value_heads = f.integer_or(key("attention.head_count_kv"), c.num_attention_heads);
  c.max_position_embeddings = f.integer_or(key("context_length"), 2048);
  c.rms_norm_eps = f.number_or(key("attention.layer_norm_rms_epsilon"), 1e-5);
  c.rope_theta = f.number_or(key("rope.freq_base"), 10000.0);
  const int64_t head_dim = f.integer_or(key("attention.key_length"), f.integer_or(key("rope.dimension_count"), 0));
  if (head_dim > 0 && head_dim * c.num_attention_heads != c.hidden_size) c.head_dim = head_dim;
  if (f.has(key("rope.dimension_count")) && f.integer(key("rope.dimension_count")) != c.dim_per_head())
    input_error("{}: {} = {} rotates part of each head; kiln rotates whole heads of {}", file, key("rope.dimension_count"),
                f.integer(key("rope.dimension_count")), c.dim_per_head());
  const std::string scaling = f.str_or(key("rope.scaling.type"), "none");
  if (scaling == "linear") {
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = f.number(key("rope.scaling.factor"));
  } else if (scaling != "none") {
    input_error("{}: {} = \"{}\" is not supported (kiln imports none and linear)", file, key("rope.scaling.type"), scaling);
  }
  if (f.find_tensor("rope_freqs.weight"))
    input_error("{}: tensor `rope_freqs.weight` (Llama 3.1-style RoPE frequency factors) is not supported by kiln import",
                file);

  data::HfTokenizerFiles tok = data::tokenizer_from_gguf(f, c.max_position_embeddings);
  const gguf::Tensor* embd = f.find_tensor("token_embd.weight");
  if (!embd) input_error("{}: no tensor `token_embd.weight`", file);
  c.vocab_size = int64_t(embd->ne[1]);
  if (f.has(key("vocab_size")) && f.integer(key("vocab_size")) != c.vocab_size)
    input_error("{}: {} = {} but token_embd.weight has {} rows", file, key("vocab_size"), f.integer(key("vocab_size")),
                c.vocab_size);
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  if (tok.bos_id >= 0) c.bos_token_id = tok.bos_id;
  if (tok.eos_id >= 0) c.eos_token_ids = {tok.eos_id};
  c.pad_token_id = tok.pad_id;
  c.torch_dtype = dtype_name(opts.dtype);

  // Every tensor must be one kiln maps; biases switch the config's bias flags on.
  NamedTensorList tensors;
  std::set<std::string> seen;
  for (const auto& t : f.tensors()) {
    Mapped m = hf_name(t.name);
    if (m.hf.empty()) input_error("{}: tensor `{}` is not part of a LLaMA model kiln knows", file, t.name);
    if (!gguf_can_dequantize(t.type))
      input_error("{}: tensor `{}` has type {}, which kiln cannot read (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)", file,
                  t.name, gguf::type_name(t.type));
    if (m.hf.size() > 5 && m.hf.compare(m.hf.size() - 5, 5, ".bias") == 0) {
      if (m.hf.find("self_attn") != std::string::npos) c.attention_bias = true;
      else c.mlp_bias = true;
    }
    seen.insert(m.hf);
  }
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    for (const auto& [gn, hn] : block_names())
      if (!seen.count(fmt::format("model.layers.{}.{}.weight", i, hn)))
        input_error("{}: tensor `blk.{}.{}.weight` is missing ({} = {})", file, i, gn, key("block_count"), c.num_hidden_layers);

  for (const auto& t : f.tensors()) {
    Mapped m = hf_name(t.name);
    at::Tensor w = gguf_tensor(f, t);
    if (m.rope_heads_of) w = rope_rows_from_gguf(w, m.rope_heads_of == 1 ? c.num_attention_heads : c.num_key_value_heads);
    tensors.emplace_back(m.hf, w.to(opts.dtype));
  }

  json config = json::parse(c.to_json_text());
  if (c.pad_token_id >= 0) config["pad_token_id"] = c.pad_token_id;
  config["attention_bias"] = c.attention_bias;
  config["mlp_bias"] = c.mlp_bias;
  json gen = {{"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos()}};
  if (c.pad_token_id >= 0) gen["pad_token_id"] = c.pad_token_id;
  const std::string source = fs::path(file).filename().string();
  if (fs::is_directory(out_dir)) fs::remove(out_dir);  // empty, checked above
  write_dir_atomic(out_dir, [&](const std::string& tmp) {
    const fs::path d(tmp);
    write_safetensors((d / "model.safetensors").string(), tensors,
                      {{"format", "pt"}, {"source", "kiln import gguf " + source}});
    write_file_atomic((d / "config.json").string(), config.dump(2) + "\n");
    write_file_atomic((d / "generation_config.json").string(), gen.dump(2) + "\n");
    write_file_atomic((d / "tokenizer.json").string(), tok.tokenizer_json.dump(2) + "\n");
    write_file_atomic((d / "tokenizer_config.json").string(), tok.tokenizer_config.dump(2) + "\n");
    write_file_atomic((d / "special_tokens_map.json").string(), tok.special_tokens_map.dump(2) + "\n");
    if (!tok.tokenizer_model.empty()) write_file_atomic((d / "tokenizer.model").string(), tok.tokenizer_model);
  });
}

void export_gguf(const std::string& hf_dir, const std::string& out_path, uint32_t type) {
  if (!gguf_can_quantize(type))
    input_error("GGUF type {}: kiln writes F32, F16, BF16 and Q8_0", gguf::type_name(type));
  const LlamaConfig c = LlamaConfig::from_file(hf_dir);
  const json raw = c.raw_json.empty() ? json::object() : json::parse(c.raw_json);
  if (raw.contains("architectures") && raw["architectures"].is_array() && !raw["architectures"].empty()) {
    const std::string a = raw["architectures"][0].get<std::string>();
    if (a != "LlamaForCausalLM" && a != "MistralForCausalLM")
      input_error("{}: a {} is not a causal language model; GGUF (llama.cpp) takes LlamaForCausalLM", hf_dir, a);
  }
  if (c.rope_scaling.type != "none" && c.rope_scaling.type != "linear")
    input_error("{}: rope_scaling {} cannot be written to GGUF by kiln (none, linear)", hf_dir, c.rope_scaling.type);
  Llama m = load_pretrained(hf_dir, at::kFloat, at::kCPU);

  gguf::Writer w;
  const std::string arch = "llama";
  w.set("general.architecture", gguf::Value::str(arch));
  w.set("general.name", gguf::Value::str(fs::path(hf_dir).filename().string()));
  w.set("general.file_type", gguf::Value::u32(type == gguf::F32 ? 0 : type == gguf::F16 ? 1 : type == gguf::Q8_0 ? 7 : 32));
  w.set("general.quantization_version", gguf::Value::u32(2));
  w.set(arch + ".block_count", gguf::Value::u32(uint32_t(c.num_hidden_layers)));
  w.set(arch + ".context_length", gguf::Value::u32(uint32_t(c.max_position_embeddings)));
  w.set(arch + ".embedding_length", gguf::Value::u32(uint32_t(c.hidden_size)));
  w.set(arch + ".feed_forward_length", gguf::Value::u32(uint32_t(c.intermediate_size)));
  w.set(arch + ".attention.head_count", gguf::Value::u32(uint32_t(c.num_attention_heads)));
  w.set(arch + ".attention.head_count_kv", gguf::Value::u32(uint32_t(c.num_key_value_heads)));
  w.set(arch + ".rope.freq_base", gguf::Value::f32(float(c.rope_theta)));
  w.set(arch + ".attention.layer_norm_rms_epsilon", gguf::Value::f32(float(c.rms_norm_eps)));
  w.set(arch + ".rope.dimension_count", gguf::Value::u32(uint32_t(c.dim_per_head())));
  if (c.head_dim > 0 && c.head_dim * c.num_attention_heads != c.hidden_size) {
    w.set(arch + ".attention.key_length", gguf::Value::u32(uint32_t(c.head_dim)));
    w.set(arch + ".attention.value_length", gguf::Value::u32(uint32_t(c.head_dim)));
  }
  w.set(arch + ".vocab_size", gguf::Value::u32(uint32_t(c.vocab_size)));
  if (c.rope_scaling.type == "linear") {
    w.set(arch + ".rope.scaling.type", gguf::Value::str("linear"));
    w.set(arch + ".rope.scaling.factor", gguf::Value::f32(float(c.rope_scaling.factor)));
  }
  data::tokenizer_to_gguf(hf_dir, w, c.vocab_size);

  // HF name to GGUF name, inverse of hf_name().
  std::map<std::string, std::string> to_gguf = {{"model.embed_tokens.weight", "token_embd.weight"},
                                                {"model.norm.weight", "output_norm.weight"},
                                                {"lm_head.weight", "output.weight"}};
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    for (const auto& [gn, hn] : block_names())
      for (const char* kind : {"weight", "bias"})
        to_gguf[fmt::format("model.layers.{}.{}.{}", i, hn, kind)] = fmt::format("blk.{}.{}.{}", i, gn, kind);
  for (auto& p : m->named_parameters()) {
    auto it = to_gguf.find(p.key());
    if (it == to_gguf.end()) input_error("{}: tensor `{}` has no GGUF name kiln knows", hf_dir, p.key());
    at::Tensor t = p.value().detach();
    const std::string& g = it->second;
    if (g.find(".attn_q.") != std::string::npos) t = rope_rows_to_gguf(t, c.num_attention_heads);
    if (g.find(".attn_k.") != std::string::npos) t = rope_rows_to_gguf(t, c.num_key_value_heads);
    // As llama.cpp's converter: 1-D tensors (norms, biases) stay F32; Q8_0 only where rows are
    // whole blocks.
    uint32_t tt = type;
    if (t.dim() == 1 || (type == gguf::Q8_0 && t.size(-1) % 32 != 0)) tt = gguf::F32;
    std::vector<uint64_t> ne(t.sizes().rbegin(), t.sizes().rend());
    w.add_tensor(g, tt, ne, [t, tt] { return gguf_quantize(tt, t); });
  }
  w.write(out_path);
}

}  // namespace kiln::model
