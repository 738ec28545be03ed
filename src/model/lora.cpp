#include "model/lora.h"

#include <cstdlib>
#include <set>

#include "core/error.h"
#include "core/log.h"

namespace kiln::model {

const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

int64_t layer_of(const std::string& name) {
  const std::string key = "layers.";
  const size_t at = name.find(key);
  if (at == std::string::npos) return -1;
  return std::strtoll(name.c_str() + at + key.size(), nullptr, 10);
}

bool is_lora_param(const std::string& name) {
  return name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos;
}

namespace {

bool name_matches(const std::string& module, const std::string& target) {
  if (module == target) return true;
  return module.size() > target.size() && module.compare(module.size() - target.size(), target.size(), target) == 0 &&
         module[module.size() - target.size() - 1] == '.';
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// requires_grad of every parameter but LoRA's of the modules named (matched as targets are; a tied
// lm_head is embed_tokens); `key` names the recipe key in errors.
void set_modules_trainable(Llama& model, const std::vector<std::string>& names, bool trainable, const char* key) {
  for (const auto& name : names) {
    std::string target = name;
    if (target == "lm_head" && model->config().tie_word_embeddings) {
      log::warn("{}: lm_head is tied to embed_tokens in this model; {} both", key, trainable ? "training" : "freezing");
      target = "embed_tokens";
    }
    bool found = false;
    for (const auto& item : model->named_modules("", false)) {
      if (!name_matches(item.key(), target)) continue;
      for (auto& p : item.value()->named_parameters())
        if (!is_lora_param(p.key())) p.value().set_requires_grad(trainable);
      found = true;
    }
    if (!found)
      input_error("key `{}`: `{}` names no module of this model (e.g. embed_tokens, lm_head, norm, layers.0)", key, name);
  }
}

}  // namespace

std::vector<std::string> apply_lora(Llama& model, const kiln::LoraConfig& cfg, const std::vector<std::string>& freeze) {
  std::vector<std::string> wrapped;
  if (!cfg.enabled) {
    for (auto& p : model->parameters()) p.set_requires_grad(true);
    set_modules_trainable(model, freeze, false, "model.freeze");
    return wrapped;
  }
  if (!freeze.empty())
    input_error("key `model.freeze`: LoRA (lora.enabled) already freezes every base weight; name what trains "
                "beside the adapters in lora.extra_trainable instead");
  if (cfg.r <= 0) input_error("key `lora.r`: must be a positive rank, got {}", cfg.r);
  if (cfg.dropout < 0 || cfg.dropout >= 1) input_error("key `lora.dropout`: must be in [0, 1), got {}", cfg.dropout);
  std::vector<std::string> targets;
  for (const auto& t : cfg.target_modules) {
    if (t == "all-linear")
      targets.insert(targets.end(), lora_target_names().begin(), lora_target_names().end());
    else
      targets.push_back(t);
  }
  if (targets.empty()) input_error("key `lora.target_modules`: empty; name at least one of {}", join(lora_target_names()));
  const int64_t depth = model->config().num_hidden_layers;
  std::set<int64_t> layers;
  for (int64_t l : cfg.layers) {
    if (l < -depth || l >= depth)
      input_error("key `lora.layers`: layer {} outside this model's {} decoder layers (0..{} or -{}..-1)", l, depth,
                  depth - 1, depth);
    layers.insert(l < 0 ? depth + l : l);
  }
  auto linears = model->linears();
  std::set<std::string> used;
  for (auto& [name, lin] : linears) {
    if (name == "lm_head") continue;  // never adapted (PEFT's all-linear excludes it too)
    if (!layers.empty() && !layers.count(layer_of(name))) continue;
    for (const auto& t : targets) {
      if (!name_matches(name, t)) continue;
      if (lin->has_lora()) input_error("LoRA is already applied to `{}` (apply_lora called twice?)", name);
      lin->add_lora(cfg.r, cfg.alpha, cfg.dropout);
      wrapped.push_back(name);
      used.insert(t);
      break;
    }
  }
  for (const auto& t : targets)
    if (!used.count(t))
      input_error("key `lora.target_modules`: `{}` matches no projection of this model (valid: {}, all-linear)", t,
                  join(lora_target_names()));

  // Freeze the base, then unfreeze adapters and the extra modules.
  for (auto& p : model->named_parameters()) p.value().set_requires_grad(is_lora_param(p.key()));
  set_modules_trainable(model, cfg.extra_trainable, true, "lora.extra_trainable");
  return wrapped;
}

bool has_lora(Llama& model) {
  for (auto& [name, lin] : model->linears())
    if (lin->has_lora()) return true;
  return false;
}

void merge_lora(Llama& model) {
  for (auto& [name, lin] : model->linears()) lin->merge();
}

void unmerge_lora(Llama& model) {
  for (auto& [name, lin] : model->linears()) lin->unmerge();
}

NamedParams trainable_parameters(Llama& model) {
  NamedParams out;
  for (auto& p : model->named_parameters())
    if (p.value().requires_grad()) out.emplace_back(p.key(), p.value());
  return out;
}

NamedParams lora_parameters(Llama& model) {
  NamedParams out;
  for (auto& p : model->named_parameters())
    if (is_lora_param(p.key())) out.emplace_back(p.key(), p.value());
  return out;
}

}  // namespace kiln::model
