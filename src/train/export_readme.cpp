#include "train/export_readme.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "core/build_info.h"
#include "core/config.h"
#include "core/files.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "model/hf_io.h"

namespace kiln::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string py_str(const std::string& s) { return json(s).dump(); }  // a JSON string is a Python literal

// The whitespace kiln's readers strip (C isspace), which Python's str.strip() exceeds (it also
// strips Unicode spaces such as U+00A0).
const char* const kStripped = R"(" \t\n\r\v\f")";

// Python that cuts the list `v` to data.max_len as data.truncation does (preprocess.cpp); "error"
// leaves it whole (kiln refuses a longer example).
std::string py_cut(const DataConfig& d, bool bos, const std::string& v) {
  if (d.truncation == "right") return fmt::format("{}[:{}]", v, d.max_len);
  if (d.truncation == "left")
    return bos ? fmt::format("{0}[:1] + {0}[1:][-{1}:]", v, d.max_len - 1) : fmt::format("{}[-{}:]", v, d.max_len);
  return v;
}

// The tokenization as prose, and (when the method asks for it) the Python tokenizer with a
// function that gives kiln's ids for the recipe's records.
struct Tokenization {
  std::string prose, python;
};

Tokenization tokenization(const Recipe& r, const data::Tokenizer& tok, const std::string& tokenizer_args, bool encode) {
  const DataConfig& d = r.data;
  const bool bos = tok.adds_bos() && tok.bos_id() >= 0;
  const bool delimited = d.format == "tsv" || d.format == "csv" || d.format == "sst";
  const std::string pair = d.text_pair_field.empty() ? "" : fmt::format(", then `{}` (no BOS of its own)", d.text_pair_field);
  Tokenization t;
  t.prose += bos ? fmt::format("- BOS `{}` (id {}) first, added by kiln.\n", tok.piece(tok.bos_id()), tok.bos_id())
                 : "- No BOS: the tokenizer's folder says `add_bos_token: false`.\n";
  if (d.format == "sst")
    t.prose += "- Text: an SST line's sentence (after the label), surrounding ASCII whitespace removed.\n";
  else if (delimited)
    t.prose += fmt::format("- Text: the `{}` field{}, surrounding ASCII whitespace (space, tab, CR, LF, VT, FF) "
                           "removed.\n", d.text_field, pair);
  else if (d.format == "jsonl")
    t.prose += fmt::format("- Text: the JSON string `{}`{}, as it is (nothing stripped).\n", d.text_field, pair);
  else if (d.format == "conll" && encode)
    t.prose += "- Text: each word of a CoNLL sentence encoded on its own (the ids of the words joined by single "
               "spaces); a word's label sits on its first token.\n";
  else if (d.format == "text")
    t.prose += "- Text: each document `BOS text EOS`, packed into windows of data.max_len tokens for training.\n";
  else
    t.prose += "- Text: prompts in the run's own format (the Python lines render one).\n";
  t.prose += fmt::format("- Length: at most {} tokens (data.max_len), BOS included; longer examples {}.\n", d.max_len,
                         d.truncation == "error" ? "are refused" : "are cut on the " + d.truncation);
  t.prose += fmt::format("- Batches: padded on the {} with id {} to the longest row of the batch; pads are masked "
                         "unless the Python lines say otherwise.\n",
                         d.padding_side, tok.pad_id());
  if (!encode) return t;

  const std::string bos_list = bos ? fmt::format("[{}]", tok.bos_id()) : "[]";
  auto ids_of = [](const std::string& text) { return "tokenizer(" + text + ", add_special_tokens=False)[\"input_ids\"]"; };
  t.python = "from transformers import AutoTokenizer\n\ntokenizer = AutoTokenizer.from_pretrained(" + tokenizer_args +
             ")\n\n\n";
  if (d.format == "conll") {
    t.python += "def encode_words(words):\n";
    t.python += "    \"\"\"kiln's token ids for a CoNLL sentence, and the word of each token (None: BOS).\"\"\"\n";
    t.python += "    ids, word_of = " + bos_list + ", " + (bos ? "[None]" : "[]") + "\n";
    t.python += "    for w, word in enumerate(words):\n";
    t.python += "        p = " + ids_of("word") + "\n";
    t.python += "        ids, word_of = ids + p, word_of + [w] * len(p)\n";
    t.python += "    return " + py_cut(d, bos, "ids") + ", " + py_cut(d, bos, "word_of") + "\n";
  } else {
    auto field = [&](const char* v) { return delimited ? fmt::format("{}.strip({})", v, kStripped) : std::string(v); };
    t.python += "def encode(text, pair=None):\n";
    t.python += "    \"\"\"kiln's token ids for a record's text (and second text).\"\"\"\n";
    t.python += "    ids = " + bos_list + " + " + ids_of(field("text")) + "\n";
    t.python += "    if pair is not None:\n";
    t.python += "        ids += " + ids_of(field("pair")) + "\n";
    t.python += "    return " + py_cut(d, bos, "ids") + "\n";
  }
  return t;
}

// The run's evaluation of `step`, from results.json; a line saying why there is none otherwise.
std::string evaluation(const std::string& run_dir, int64_t step, std::string* trained_commit) {
  const fs::path rj = fs::path(run_dir) / "results.json";
  if (!fs::exists(rj)) return "No evaluation is recorded for this run (no results.json in its run directory).\n";
  json j = json::parse(read_file(rj.string()), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fmt::format("{} is not readable JSON.\n", rj.string());
  if (j.contains("commit") && j["commit"].is_string()) *trained_commit = j["commit"].get<std::string>();
  const int64_t at = j.value("step", int64_t(-1));
  if (at != step)
    return fmt::format("No evaluation of step {} is recorded ({} holds step {}'s).\n", step, rj.string(), at);
  if (!j.contains("eval") || !j["eval"].is_object() || j["eval"].empty())
    return "The run ended without an evaluation (no eval data).\n";
  std::string out = fmt::format("kiln's evaluation at the end of training (step {}, {}):\n\n", step, rj.string());
  out += "| metric | value |\n|---|---|\n";
  for (auto it = j["eval"].begin(); it != j["eval"].end(); ++it)
    out += fmt::format("| {} | {} |\n", it.key(), it->is_number() ? fmt::format("{:.4f}", it->get<double>()) : it->dump());
  return out;
}

}  // namespace

ExportUse write_export_readme(const std::string& dir, const ExportTarget& target, const Recipe& r, const Task& task,
                              int64_t step, const std::string& run_dir) {
  ExportUse use = task.export_use(target);
  const std::string kind = target.merged ? "merged model (LoRA folded into the weights)" : "PEFT adapter";
  const std::string base = fs::absolute(r.model.path).lexically_normal().string();
  const std::string folder = fs::absolute(target.folder).lexically_normal().string();
  std::string trained_commit = "unknown";
  const std::string eval = evaluation(run_dir, step, &trained_commit);

  std::string md = fmt::format("# {}: {} exported by kiln\n\n", r.name, kind);
  md += fmt::format("- Method: `{}`; recipe `{}` ({}, sha256 {}).\n", r.method, r.name,
                    r.file.empty() ? "-" : fs::absolute(r.file).lexically_normal().string(), r.fingerprint);
  md += fmt::format("- Base model: `{}`.\n", base);
  md += fmt::format("- Checkpoint step {}; trained by kiln commit {}, exported by kiln commit {}.\n", step,
                    trained_commit, git_commit());
  if (!use.unreproducible.empty())
    md += fmt::format("\n**transformers and peft do not reproduce this export**: {}.\n", use.unreproducible);

  const data::Tokenizer tok = model::load_tokenizer(r.model.path);
  // transformers 5's AutoTokenizer reads config.json first: a folder that names its own model
  // code (auto_map) would stop at the remote-code prompt without trust_remote_code.
  bool own_code = false;
  if (target.merged && fs::exists(fs::path(dir) / "config.json")) {
    const json c = json::parse(read_file((fs::path(dir) / "config.json").string()), nullptr, false);
    own_code = c.is_object() && c.contains("auto_map");
  }
  const Tokenization t =
      tokenization(r, tok, target.merged ? (own_code ? "folder, trust_remote_code=True" : "folder") : "base", use.encode);
  if (!use.python.empty()) {
    md += "\n## Load it in Python\n\n";
    md += "These lines give kiln's outputs (checked by kiln's tests against its own evaluation).\n\n```python\n";
    md += "base = " + py_str(base) + "  # the model kiln trained from\n";
    md += "folder = " + py_str(folder) + "  # this export\n";
    md += use.python;
    if (!t.python.empty()) md += "\n" + t.python;
    if (!use.example.empty()) md += "\n\n" + use.example;
    md += "```\n";
  }
  md += "\n## Tokenization kiln used\n\n" + t.prose;
  md += "\n## Evaluation\n\n" + eval;
  write_file_atomic((fs::path(dir) / "README.md").string(), md);
  if (!use.unreproducible.empty())
    log::warn("{}: transformers and peft do not reproduce this {}: {} (README.md says so)", folder,
              target.merged ? "merged export" : "adapter", use.unreproducible);
  return use;
}

}  // namespace kiln::train
