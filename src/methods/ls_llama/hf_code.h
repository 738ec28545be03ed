// What transformers and peft need to compute an ls_llama export as kiln does. transformers'
// LlamaForSequenceClassification pools the last real token of a causal model with the padding
// masked, and nothing more; its LlamaForTokenClassification names its head `score` (kiln's, like
// the official code's, is `classifier`). Every other export carries modeling_kiln_llama.py (this
// folder), the one Python source of kiln's classes, built into the binary: a merged export names
// it in config.json (auto_map, loaded with trust_remote_code=True), an adapter's README builds the
// base model with it before peft applies the adapter.
#pragma once
#include <string>
#include <vector>

#include "model/pooling.h"

namespace kiln::methods::ls_llama {

struct HfSettings {
  bool token = false;  // token classification (else sequence)
  model::Pooling pooling = model::Pooling::last;
  bool bidirectional = false;
  bool pads_attended = false;
  std::vector<std::string> labels;
};

constexpr const char* kModelingFile = "modeling_kiln_llama.py";
// The text of modeling_kiln_llama.py as this binary was built with it.
const char* modeling_source();

// Whether transformers' own class computes kiln's outputs (no model code needed).
bool stock_class(const HfSettings& s);
// The class an export is loaded with: LlamaForSequenceClassification or KilnLlamaFor...Classification.
std::string class_name(const HfSettings& s);

// Writes modeling_kiln_llama.py into `dir` when the settings need it.
void write_model_code(const std::string& dir, const HfSettings& s);
// A merged export's config.json (as model::export_merged wrote it) made to name kiln's class when
// the settings need it: model_type kiln_llama (so that transformers refuses the folder without
// trust_remote_code instead of building its own class), architectures, auto_map, kiln_pooling,
// kiln_attention, kiln_pads.
void configure_merged(const std::string& dir, const HfSettings& s);

// README lines (train::ExportUse): Python that defines `model` from `base` and `folder`, and an
// example that uses it with the README's encode() / encode_words().
std::string python_load(const HfSettings& s, bool merged);
std::string python_example(const HfSettings& s, int pad_id);

}  // namespace kiln::methods::ls_llama
