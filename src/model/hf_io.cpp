#include "model/hf_io.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "model/safetensors.h"

namespace kiln::model {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const char* kPeftPrefix = "base_model.model.";

json read_json(const fs::path& p, const std::string& what) {
  std::ifstream in(p);
  if (!in) input_error("{}: cannot open {}", p.string(), what);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    input_error("{}: not valid JSON: {}", p.string(), e.what());
  }
}

void write_text(const fs::path& p, const std::string& text) { write_file_atomic(p.string(), text); }

void make_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) input_error("{}: cannot create the directory: {}", dir, ec.message());
}

// Tensors a checkpoint may carry that are not parameters: old exports saved RoPE's inverse frequencies.
bool ignorable(const std::string& name, const LlamaConfig& c) {
  if (name.size() > 20 && name.compare(name.size() - 20, 20, "rotary_emb.inv_freq") == 0) return true;
  if (name.find("rotary_emb.inv_freq") != std::string::npos) return true;
  if (c.tie_word_embeddings && name == "lm_head.weight") return true;  // some tied checkpoints store the copy
  // The heads of transformers' LlamaForSequenceClassification / ForTokenClassification: the decoder
  // loads without them, as from_pretrained does; a method reads them with load_head_tensor().
  return name.rfind("score.", 0) == 0 || name.rfind("classifier.", 0) == 0;
}

}  // namespace

at::ScalarType parse_dtype(const std::string& s) {
  if (s == "float32" || s == "fp32" || s == "float") return at::kFloat;
  if (s == "bfloat16" || s == "bf16") return at::kBFloat16;
  if (s == "float16" || s == "fp16" || s == "half") return at::kHalf;
  input_error("dtype `{}`: must be float32, bfloat16 or float16", s);
}

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: KILN_CHECK(false, "no torch_dtype name for {}", c10::toString(t));
  }
}

std::string model_dir(const Llama& model) { return fs::path(model->config().source).parent_path().string(); }

void load_weights(Llama& model, const std::string& dir) {
  const fs::path d(dir);
  const fs::path single = d / "model.safetensors", index = d / "model.safetensors.index.json";
  // file -> tensors to take from it
  std::map<std::string, std::vector<std::string>> plan;
  std::map<std::string, std::string> file_of;
  if (fs::exists(index)) {
    json j = read_json(index, "the shard index");
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      input_error("{}: field `weight_map` must be an object mapping tensor names to shard files", index.string());
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string()) input_error("{}: `weight_map.{}` must be a file name", index.string(), it.key());
      const std::string f = (d / it->get<std::string>()).string();
      plan[f].push_back(it.key());
      file_of[it.key()] = f;
    }
  } else if (fs::exists(single)) {
    plan[single.string()] = {};  // everything in it
  } else {
    const bool bin = fs::exists(d / "pytorch_model.bin") || fs::exists(d / "pytorch_model.bin.index.json");
    input_error("{}: no model.safetensors or model.safetensors.index.json{}", dir,
                bin ? " (pytorch_model.bin is not read: convert it to safetensors)" : "");
  }

  std::map<std::string, at::Tensor> expected;
  for (auto& p : model->named_parameters())
    if (!is_lora_param(p.key())) expected.emplace(p.key(), p.value());
  std::set<std::string> loaded;
  for (auto& [file, names] : plan) {
    if (!fs::exists(file)) input_error("{}: shard named in {} is missing", file, index.string());
    SafeTensorsFile st(file);
    std::vector<std::string> take = names;
    if (take.empty())
      for (const auto& [n, e] : st.entries()) take.push_back(n);
    for (const auto& n : take) {
      if (!st.has(n)) input_error("{}: has no tensor `{}` although {} maps it there", file, n, index.filename().string());
      auto it = expected.find(n);
      if (it == expected.end()) {
        if (ignorable(n, model->config())) continue;
        input_error("{}: unexpected tensor `{}` {} : the model described by config.json has no such parameter", file,
                    n, shape_str(st.entry(n).shape));
      }
      st.copy_into(n, it->second, "config.json (" + model->config().source + ")");
      loaded.insert(n);
    }
  }
  for (const auto& [n, t] : expected)
    if (!loaded.count(n))
      input_error("{}: tensor `{}` (shape {}) is missing from {}", dir, n, shape_str(t.sizes()),
                  file_of.empty() ? single.string() : index.string());
}

Llama load_pretrained(const std::string& dir, at::ScalarType dtype, c10::Device device) {
  LlamaConfig c = LlamaConfig::from_file(dir);
  if (dtype == at::kBFloat16 && device.is_cpu()) {
    static const std::string note = bf16_cpu_note("bfloat16 weights");
    static bool said = false;
    if (!note.empty() && !said) log::warn("{}", note);
    said = true;
  }
  Llama model(c, dtype, device);
  load_weights(model, dir);
  return model;
}

Llama load_pretrained(const kiln::ModelConfig& cfg, c10::Device device) {
  if (cfg.path.empty()) input_error("key `model.path`: no model folder given");
  Llama model = load_pretrained(cfg.path, parse_dtype(cfg.dtype), device);
  model->set_attention_mode(parse_attention_mode(cfg.attention));
  model->set_activation_checkpointing(cfg.activation_checkpointing);
  return model;
}

namespace {
// tokenizer_config.json's add_bos_token, where the folder says it.
void apply_tokenizer_config(data::Tokenizer& tok, const std::string& dir) {
  const fs::path tc = fs::path(dir) / "tokenizer_config.json";
  if (!fs::exists(tc)) return;
  json j = read_json(tc, "the tokenizer config");
  if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) tok.set_adds_bos(j["add_bos_token"].get<bool>());
}
}  // namespace

data::Tokenizer load_tokenizer(const std::string& dir, const LlamaConfig& c) {
  data::Tokenizer tok(dir);  // tokenizer.model, else tokenizer.json
  const int32_t eos = int32_t(c.eos());
  tok.set_special_ids(int32_t(c.bos_token_id), eos, c.pad_token_id >= 0 ? int32_t(c.pad_token_id) : eos);
  apply_tokenizer_config(tok, dir);
  return tok;
}

data::Tokenizer load_tokenizer(const std::string& dir) {
  if (fs::exists(fs::path(dir) / "config.json")) return load_tokenizer(dir, LlamaConfig::from_file(dir));
  data::Tokenizer tok(dir);  // a tokenizer-only folder: the ids its own files give
  apply_tokenizer_config(tok, dir);
  return tok;
}

// ---------------------------------------------------------------- PEFT adapter

void export_adapter(Llama& model, const std::string& dir, const AdapterExport& opts) {
  NamedTensorList tensors;
  std::vector<std::string> targets;
  std::set<std::string> modules_to_save;
  std::set<int64_t> layers;  // decoder layers with adapters
  int64_t r = 0;
  double alpha = 0, dropout = 0;
  for (auto& [name, lin] : model->linears()) {
    if (!lin->has_lora()) continue;
    if (r == 0) {
      r = lin->lora_r;
      alpha = lin->lora_alpha;
      dropout = lin->lora_dropout;
    }
    KILN_CHECK(lin->lora_r == r && lin->lora_alpha == alpha, "LoRA rank/alpha differ between modules");
    if (const int64_t l = layer_of(name); l >= 0) layers.insert(l);
    const std::string short_name = name.substr(name.rfind('.') + 1);
    if (std::find(targets.begin(), targets.end(), short_name) == targets.end()) targets.push_back(short_name);
  }
  if (r == 0) input_error("{}: the model has no LoRA adapter to export (export the merged model instead)", dir);
  for (auto& p : model->named_parameters()) {
    if (is_lora_param(p.key())) {
      tensors.emplace_back(kPeftPrefix + p.key(), p.value());
    } else if (p.value().requires_grad()) {
      // A trained base module (embed_tokens, lm_head): PEFT's modules_to_save, saved whole.
      tensors.emplace_back(kPeftPrefix + p.key(), p.value());
      const std::string mod = p.key().substr(0, p.key().rfind('.'));
      modules_to_save.insert(mod.substr(mod.rfind('.') + 1));
    }
  }
  for (const auto& [name, t] : opts.extra) {
    tensors.emplace_back(kPeftPrefix + name, t);
    const std::string mod = name.substr(0, name.rfind('.'));
    modules_to_save.insert(mod.substr(mod.rfind('.') + 1));
  }
  const bool all_layers = int64_t(layers.size()) == model->config().num_hidden_layers;
  json cfg = {{"peft_type", "LORA"},
              {"task_type", opts.task_type},
              {"base_model_name_or_path", opts.base_model.empty() ? model_dir(model) : opts.base_model},
              {"revision", nullptr},
              {"r", r},
              {"lora_alpha", alpha},
              {"lora_dropout", dropout},
              {"target_modules", targets},
              {"bias", "none"},
              {"fan_in_fan_out", false},
              {"inference_mode", true},
              {"init_lora_weights", true},
              {"layers_to_transform", all_layers ? json(nullptr) : json(layers)},
              {"layers_pattern", all_layers ? json(nullptr) : json("layers")},
              {"rank_pattern", json::object()},
              {"alpha_pattern", json::object()},
              {"use_rslora", false},
              {"use_dora", false},
              {"modules_to_save", modules_to_save.empty() ? json(nullptr) : json(modules_to_save)}};
  make_dir(dir);
  write_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), tensors);
  write_text(fs::path(dir) / "adapter_config.json", cfg.dump(2) + "\n");
}

LoadedAdapter load_adapter(Llama& model, const std::string& dir) {
  const fs::path cfg_path = fs::path(dir) / "adapter_config.json";
  json j = read_json(cfg_path, "the adapter config (is this a PEFT adapter folder?)");
  auto field = [&](const char* key) -> const json& {
    if (!j.contains(key) || j[key].is_null()) input_error("{}: required field `{}` is missing", cfg_path.string(), key);
    return j[key];
  };
  auto bad = [&](const char* key, const char* want) {
    input_error("{}: field `{}` must be {}, got {}", cfg_path.string(), key, want, shorten(j[key].dump(), 40));
  };
  if (!field("peft_type").is_string() || j["peft_type"] != "LORA")
    input_error("{}: field `peft_type` is {}; kiln loads LORA adapters", cfg_path.string(), j["peft_type"].dump());
  for (const char* unsupported : {"use_rslora", "use_dora"})
    if (j.contains(unsupported) && j[unsupported].is_boolean() && j[unsupported].get<bool>())
      input_error("{}: field `{}` is true; kiln's LoRA does not implement it", cfg_path.string(), unsupported);
  for (const char* unsupported : {"rank_pattern", "alpha_pattern"})
    if (j.contains(unsupported) && j[unsupported].is_object() && !j[unsupported].empty())
      input_error("{}: field `{}` is set; kiln uses one rank and alpha for every module", cfg_path.string(),
                  unsupported);
  LoadedAdapter out;
  if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null()) {
    const json& l = j["layers_to_transform"];
    if (l.is_number_integer()) {
      out.lora.layers = {l.get<int64_t>()};
    } else if (l.is_array() && std::all_of(l.begin(), l.end(), [](const json& v) { return v.is_number_integer(); })) {
      out.lora.layers = l.get<std::vector<int64_t>>();
    } else {
      bad("layers_to_transform", "a layer index or a list of them");
    }
    if (j.contains("layers_pattern") && !j["layers_pattern"].is_null() &&
        !(j["layers_pattern"].is_string() && j["layers_pattern"] == "layers") &&
        !(j["layers_pattern"].is_array() && j["layers_pattern"].size() == 1 && j["layers_pattern"][0] == "layers"))
      bad("layers_pattern", "`layers` (LLaMA's decoder layers)");
  }
  if (!field("r").is_number_integer()) bad("r", "an integer");
  if (!field("lora_alpha").is_number()) bad("lora_alpha", "a number");
  out.lora.r = j["r"].get<int64_t>();
  out.lora.alpha = j["lora_alpha"].get<double>();
  out.lora.dropout = j.value("lora_dropout", 0.0);
  const json& tm = field("target_modules");
  if (tm.is_string()) {
    if (tm.get<std::string>() != "all-linear")
      input_error("{}: field `target_modules` is a regular expression ({}); kiln reads a list of module names",
                  cfg_path.string(), shorten(tm.dump(), 40));
    out.lora.target_modules = {"all-linear"};
  } else if (tm.is_array()) {
    out.lora.target_modules.clear();
    for (const auto& t : tm) {
      if (!t.is_string()) bad("target_modules", "a list of module names");
      out.lora.target_modules.push_back(t.get<std::string>());
    }
  } else {
    bad("target_modules", "a list of module names");
  }
  out.lora.extra_trainable.clear();
  out.task_type = j.value("task_type", std::string("CAUSAL_LM"));
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
    out.base_model = j["base_model_name_or_path"].get<std::string>();
  if (has_lora(model)) input_error("{}: the model already has a LoRA adapter", dir);
  apply_lora(model, out.lora, {});

  std::map<std::string, at::Tensor> params;
  for (auto& p : model->named_parameters()) params.emplace(p.key(), p.value());
  const std::string file = (fs::path(dir) / "adapter_model.safetensors").string();
  if (!fs::exists(file)) input_error("{}: missing (adapter_model.bin is not read: save with safe_serialization)", file);
  SafeTensorsFile st(file);
  std::set<std::string> loaded;
  const std::string prefix = kPeftPrefix;
  for (const auto& [key, e] : st.entries()) {
    std::string name = key.rfind(prefix, 0) == 0 ? key.substr(prefix.size()) : key;
    auto it = params.find(name);
    if (it == params.end()) {
      if (is_lora_param(name))
        input_error("{}: tensor `{}` adapts a module that target_modules {} does not wrap", file, key,
                    tm.dump());
      out.extra.emplace_back(name, st.load(key));
      continue;
    }
    st.copy_into(key, it->second, "the base model with adapter_config.json");
    if (!is_lora_param(name)) {
      // A modules_to_save tensor of the Llama itself: it was trained, keep it trainable.
      it->second.set_requires_grad(true);
      out.lora.extra_trainable.push_back(name.substr(0, name.rfind('.')));
    }
    loaded.insert(name);
  }
  for (auto& [name, t] : lora_parameters(model))
    if (!loaded.count(name)) input_error("{}: tensor `{}{}` is missing", file, prefix, name);
  return out;
}

// ---------------------------------------------------------------- merged export

void export_merged(Llama& model, const std::string& dir, const MergedHead& head, at::ScalarType dtype) {
  if (dtype == at::ScalarType::Undefined) dtype = model->dtype();
  std::map<std::string, Linear> adapted;
  for (auto& [name, lin] : model->linears())
    if (lin->has_lora() && !lin->merged()) adapted.emplace(name + ".weight", lin);
  NamedTensorList tensors;
  for (auto& p : model->named_parameters()) {
    if (is_lora_param(p.key())) continue;
    at::Tensor t = p.value().detach();
    auto it = adapted.find(p.key());
    if (it != adapted.end()) {
      // The same arithmetic as LinearImpl::merge, so the export equals the merged model bit for bit.
      at::Tensor d = it->second->delta_weight();
      t = t.scalar_type() == at::kFloat ? t.add(d) : (t.to(at::kFloat) + d.to(at::kFloat)).to(t.scalar_type());
    }
    tensors.emplace_back(p.key(), t.to(dtype));
  }
  for (const auto& [name, t] : head.tensors) tensors.emplace_back(name, t.detach().to(dtype));
  make_dir(dir);
  write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors);
  LlamaConfig c = model->config();
  c.torch_dtype = dtype_name(dtype);
  std::string config = c.to_json_text();
  if (!head.architecture.empty()) {
    json j = json::parse(config);
    j["architectures"] = {head.architecture};
    j["num_labels"] = head.labels.size();
    for (size_t i = 0; i < head.labels.size(); ++i) {
      j["id2label"][std::to_string(i)] = head.labels[i];
      j["label2id"][head.labels[i]] = i;
    }
    config = j.dump(2) + "\n";
  }
  write_text(fs::path(dir) / "config.json", config);
  const fs::path src = model_dir(model);
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json",
                        "generation_config.json"}) {
    if (src.empty() || !fs::exists(src / f) || fs::equivalent(src, dir)) continue;
    std::error_code ec;
    fs::copy_file(src / f, fs::path(dir) / f, fs::copy_options::overwrite_existing, ec);
    if (ec) write_failed((fs::path(dir) / f).string(), ec.value());
  }
}

at::Tensor load_head_tensor(const std::string& dir, const std::string& name) {
  const fs::path d(dir), index = d / "model.safetensors.index.json";
  std::string file = (d / "model.safetensors").string();
  if (fs::exists(index)) {
    json j = read_json(index, "the shard index");
    if (!j.contains("weight_map") || !j["weight_map"].contains(name)) return {};
    file = (d / j["weight_map"][name].get<std::string>()).string();
  }
  if (!fs::exists(file)) return {};
  SafeTensorsFile st(file);
  return st.has(name) ? st.load(name) : at::Tensor();
}

}  // namespace kiln::model
