#include "methods/ls_llama/hf_code.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "core/files.h"

namespace kiln::methods::ls_llama {

namespace {
#include "modeling_kiln_llama_py.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

const char* pooling_field(const HfSettings& s) { return model::pooling_name(s.pooling); }
const char* attention_field(const HfSettings& s) { return s.bidirectional ? "bidirectional" : "causal"; }
const char* pads_field(const HfSettings& s) { return s.pads_attended ? "attended" : "masked"; }

// {0: "neg", 1: "pos"} as Python.
std::string id2label(const HfSettings& s) {
  std::string out = "{";
  for (size_t i = 0; i < s.labels.size(); ++i) out += fmt::format("{}{}: {}", i ? ", " : "", i, json(s.labels[i]).dump());
  return out + "}";
}
}  // namespace

const char* modeling_source() { return kModelingKilnLlamaPy; }

bool stock_class(const HfSettings& s) {
  return !s.token && s.pooling == model::Pooling::last && !s.bidirectional && !s.pads_attended;
}

std::string class_name(const HfSettings& s) {
  if (stock_class(s)) return "LlamaForSequenceClassification";
  return s.token ? "KilnLlamaForTokenClassification" : "KilnLlamaForSequenceClassification";
}

void write_model_code(const std::string& dir, const HfSettings& s) {
  if (!stock_class(s)) write_file_atomic((fs::path(dir) / kModelingFile).string(), modeling_source());
}

void configure_merged(const std::string& dir, const HfSettings& s) {
  if (stock_class(s)) return;
  const std::string path = (fs::path(dir) / "config.json").string();
  json j = json::parse(read_file(path));
  const std::string module = fs::path(kModelingFile).stem().string();
  j["model_type"] = "kiln_llama";
  j["architectures"] = {class_name(s)};
  j["auto_map"] = {{"AutoConfig", module + ".KilnLlamaConfig"},
                   {s.token ? "AutoModelForTokenClassification" : "AutoModelForSequenceClassification",
                    module + "." + class_name(s)}};
  if (!s.token) j["kiln_pooling"] = pooling_field(s);
  j["kiln_attention"] = attention_field(s);
  j["kiln_pads"] = pads_field(s);
  write_file_atomic(path, j.dump(2) + "\n");
  write_model_code(dir, s);
}

std::string python_load(const HfSettings& s, bool merged) {
  const std::string cls = class_name(s);
  std::string py = "import torch\n";
  if (stock_class(s)) {
    if (merged) return py + "from transformers import " + cls + "\n\nmodel = " + cls + ".from_pretrained(folder).eval()\n";
    return py + "from peft import PeftModel\nfrom transformers import " + cls + "\n\nmodel = " + cls +
           ".from_pretrained(base, id2label=" + id2label(s) + ")\nmodel = PeftModel.from_pretrained(model, folder).eval()\n";
  }
  if (merged) {
    const std::string auto_cls = s.token ? "AutoModelForTokenClassification" : "AutoModelForSequenceClassification";
    return py + "from transformers import " + auto_cls + "\n\n# kiln's " +
           (s.token ? std::string("token classifier") : fmt::format("{} pooling", pooling_field(s))) + " with " +
           attention_field(s) + " attention, pads " + pads_field(s) + ": " + kModelingFile +
           " in this folder (config.json's auto_map)\nmodel = " + auto_cls +
           ".from_pretrained(folder, trust_remote_code=True).eval()\n";
  }
  const std::string module = fs::path(kModelingFile).stem().string();
  py = "import sys\n\n" + py + "from peft import PeftModel\n\n";
  py += std::string("sys.path.insert(0, folder)  # ") + kModelingFile + ": kiln's classes, which transformers' lack\n";
  py += "from " + module + " import " + cls + "\n\n";
  py += "model = " + cls + ".from_base(\n    base, id2label=" + id2label(s);
  if (!s.token) py += fmt::format(", kiln_pooling=\"{}\"", pooling_field(s));
  py += fmt::format(", kiln_attention=\"{}\", kiln_pads=\"{}\")\n", attention_field(s), pads_field(s));
  py += "model = PeftModel.from_pretrained(model, folder).eval()\n";
  return py;
}

std::string python_example(const HfSettings& s, int pad_id) {
  std::string py;
  if (s.pads_attended)
    py += fmt::format(
        "# Pads attended (task.pads): a row's scores depend on its padding, as in kiln. One text alone\n"
        "# has none; kiln's evaluation pads each batch on the right with id {} to its longest row and\n"
        "# passes attention_mask (1 on tokens): do the same to get its figures.\n",
        pad_id);
  if (s.token) {
    py += "ids, word_of = encode_words([\"EU\", \"rejects\", \"German\", \"call\"])\n";
    py += "with torch.no_grad():\n    tags = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1)\n";
    py += "# A word's tag is its first token's.\n";
    py += "print([model.config.id2label[int(tags[i])] for i in range(len(ids))\n"
          "       if word_of[i] is not None and (i == 0 or word_of[i] != word_of[i - 1])])\n";
  } else {
    py += "with torch.no_grad():\n    logits = model(input_ids=torch.tensor([encode(\"a gorgeous, witty film\")])).logits[0]\n";
    py += "print(model.config.id2label[int(logits.argmax())], logits.tolist())\n";
  }
  return py;
}

}  // namespace kiln::methods::ls_llama
