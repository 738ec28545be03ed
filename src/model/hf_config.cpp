#include "model/hf_config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace kiln::model {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string type_name(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "a list";
  return "an object";
}

// Reads optional typed fields of one JSON object, naming file and field on a type mismatch.
struct Reader {
  const json& obj;
  std::string source, prefix;

  [[noreturn]] void bad(const std::string& key, const std::string& want, const json& v) const {
    input_error("{}: field `{}{}` must be {}, got {} ({})", source, prefix, key, want, type_name(v),
                shorten(v.dump(), 40));
  }
  const json* get(const std::string& key) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
  }
  void integer(const std::string& key, int64_t& out, int64_t lo = 0) const {
    const json* v = get(key);
    if (!v) return;
    if (!v->is_number_integer()) bad(key, "an integer", *v);
    out = v->get<int64_t>();
    if (out < lo) input_error("{}: field `{}{}` is {}, must be at least {}", source, prefix, key, out, lo);
  }
  void required_integer(const std::string& key, int64_t& out) const {
    if (!get(key)) input_error("{}: required field `{}{}` is missing", source, prefix, key);
    integer(key, out, 1);
  }
  void number(const std::string& key, double& out) const {
    const json* v = get(key);
    if (!v) return;
    if (!v->is_number()) bad(key, "a number", *v);
    out = v->get<double>();
  }
  void boolean(const std::string& key, bool& out) const {
    const json* v = get(key);
    if (!v) return;
    if (!v->is_boolean()) bad(key, "true or false", *v);
    out = v->get<bool>();
  }
  void string(const std::string& key, std::string& out) const {
    const json* v = get(key);
    if (!v) return;
    if (!v->is_string()) bad(key, "a string", *v);
    out = v->get<std::string>();
  }
};

}  // namespace

bool LlamaConfig::is_eos(int64_t id) const {
  for (int64_t e : eos_token_ids)
    if (e == id) return true;
  return false;
}

LlamaConfig LlamaConfig::from_file(const std::string& path) {
  fs::path p(path);
  if (fs::is_directory(p)) p /= "config.json";
  std::ifstream in(p);
  if (!in) input_error("{}: cannot open the model's config.json (is this a Hugging Face model folder?)", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json_text(ss.str(), p.string());
}

LlamaConfig LlamaConfig::from_json_text(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number past double
    input_error("{}: not valid JSON: {}", source, e.what());
  }
  if (!j.is_object()) input_error("{}: expected a JSON object, got {}", source, type_name(j));
  LlamaConfig c;
  c.source = source;
  c.raw_json = text;
  Reader r{j, source, ""};
  r.string("model_type", c.model_type);
  if (c.model_type == "kiln_llama") {
    // A merged ls_llama export that names kiln's own Python classes (methods/ls_llama/hf_code.h):
    // a LLaMA whose head kiln reads apart. What named those classes is dropped, so that a later
    // export describes what it holds itself.
    c.model_type = "llama";
    for (const char* k : {"auto_map", "architectures", "kiln_pooling", "kiln_attention", "kiln_pads"}) j.erase(k);
    c.raw_json = j.dump();
  }
  if (c.model_type != "llama" && c.model_type != "mistral")
    input_error("{}: field `model_type` is \"{}\"; kiln runs LLaMA-architecture models (llama, mistral)", source,
                c.model_type);
  r.required_integer("vocab_size", c.vocab_size);
  r.required_integer("hidden_size", c.hidden_size);
  r.required_integer("intermediate_size", c.intermediate_size);
  r.required_integer("num_hidden_layers", c.num_hidden_layers);
  r.required_integer("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = c.num_attention_heads;
  r.integer("num_key_value_heads", c.num_key_value_heads, 1);
  r.integer("head_dim", c.head_dim, 0);
  r.integer("max_position_embeddings", c.max_position_embeddings, 1);
  r.number("rms_norm_eps", c.rms_norm_eps);
  r.number("rope_theta", c.rope_theta);
  r.boolean("tie_word_embeddings", c.tie_word_embeddings);
  r.boolean("attention_bias", c.attention_bias);
  r.boolean("mlp_bias", c.mlp_bias);
  r.string("hidden_act", c.hidden_act);
  r.string("torch_dtype", c.torch_dtype);
  r.integer("bos_token_id", c.bos_token_id, 0);
  r.integer("pad_token_id", c.pad_token_id, 0);
  r.integer("sliding_window", c.sliding_window, 0);
  if (const json* e = r.get("eos_token_id")) {
    c.eos_token_ids.clear();
    if (e->is_number_integer()) {
      c.eos_token_ids.push_back(e->get<int64_t>());
    } else if (e->is_array()) {
      for (const auto& x : *e) {
        if (!x.is_number_integer()) r.bad("eos_token_id", "an integer or a list of integers", *e);
        c.eos_token_ids.push_back(x.get<int64_t>());
      }
    } else {
      r.bad("eos_token_id", "an integer or a list of integers", *e);
    }
  }
  if (const json* s = r.get("rope_scaling")) {
    if (!s->is_object()) r.bad("rope_scaling", "an object or null", *s);
    Reader rs{*s, source, "rope_scaling."};
    std::string type;
    rs.string("rope_type", type);  // newer transformers
    if (type.empty()) rs.string("type", type);
    if (type == "default" || type.empty()) type = "none";
    if (type != "none" && type != "linear" && type != "llama3")
      input_error("{}: field `rope_scaling.type` is \"{}\"; supported: linear, llama3 (or null)", source, type);
    c.rope_scaling.type = type;
    rs.number("factor", c.rope_scaling.factor);
    rs.number("low_freq_factor", c.rope_scaling.low_freq_factor);
    rs.number("high_freq_factor", c.rope_scaling.high_freq_factor);
    rs.integer("original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings, 1);
    if (type != "none" && !(c.rope_scaling.factor > 0))
      input_error("{}: field `rope_scaling.factor` must be > 0", source);
    if (type == "llama3" && !(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor))
      input_error("{}: field `rope_scaling.high_freq_factor` must exceed `low_freq_factor`", source);
  }
  if (c.hidden_act != "silu" && c.hidden_act != "swish")
    input_error("{}: field `hidden_act` is \"{}\"; LLaMA's SwiGLU MLP needs \"silu\"", source, c.hidden_act);
  if (c.head_dim == 0 && c.hidden_size % c.num_attention_heads != 0)
    input_error("{}: `hidden_size` {} is not divisible by `num_attention_heads` {}", source, c.hidden_size,
                c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    input_error("{}: `num_attention_heads` {} is not a multiple of `num_key_value_heads` {}", source,
                c.num_attention_heads, c.num_key_value_heads);
  if (c.dim_per_head() % 2 != 0) input_error("{}: the head dimension {} must be even for RoPE", source, c.dim_per_head());
  if (!(c.rms_norm_eps > 0)) input_error("{}: field `rms_norm_eps` must be > 0", source);
  if (!(c.rope_theta > 0)) input_error("{}: field `rope_theta` must be > 0", source);
  return c;
}

std::string LlamaConfig::to_json_text() const {
  json j = raw_json.empty() ? json::object() : json::parse(raw_json);
  if (!j.contains("architectures")) j["architectures"] = {model_type == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  if (head_dim > 0) j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["hidden_act"] = hidden_act;
  j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1)
    j["eos_token_id"] = eos_token_ids[0];
  else
    j["eos_token_id"] = eos_token_ids;
  j["torch_dtype"] = torch_dtype;
  if (rope_scaling.type == "none") {
    j["rope_scaling"] = nullptr;
  } else {
    json s = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      s["low_freq_factor"] = rope_scaling.low_freq_factor;
      s["high_freq_factor"] = rope_scaling.high_freq_factor;
      s["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = s;
  }
  return j.dump(2) + "\n";
}

std::vector<double> LlamaConfig::inv_freq() const {
  const int64_t d = dim_per_head();
  std::vector<double> f(size_t(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) f[size_t(i)] = 1.0 / std::pow(rope_theta, double(2 * i) / double(d));
  const auto& s = rope_scaling;
  if (s.type == "linear") {
    // HF divides the positions by the factor; dividing the frequencies is the same product.
    for (auto& x : f) x /= s.factor;
  } else if (s.type == "llama3") {
    // transformers' _compute_llama3_parameters: long wavelengths are scaled by the factor, short
    // ones kept, the band between blended linearly in old_context / wavelength.
    const double old_ctx = double(s.original_max_position_embeddings);
    const double low_wavelen = old_ctx / s.low_freq_factor, high_wavelen = old_ctx / s.high_freq_factor;
    for (auto& x : f) {
      const double wavelen = 2 * M_PI / x;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        x /= s.factor;
        continue;
      }
      const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      x = (1 - smooth) * x / s.factor + smooth * x;
    }
  }
  return f;
}

}  // namespace kiln::model
