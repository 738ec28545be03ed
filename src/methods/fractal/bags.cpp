#include "methods/fractal/bags.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "data/tokenizer.h"

namespace kiln::methods::fractal {

namespace {

using json = nlohmann::json;

std::vector<std::string> read_lines(const std::string& path) {
  if (!std::filesystem::exists(path)) input_error("{}: file not found", path);
  std::vector<std::string> lines;
  auto ends_with = [&](const std::string& s) {
    return path.size() >= s.size() && path.compare(path.size() - s.size(), s.size(), s) == 0;
  };
  if (ends_with(".xz")) {
    // xz-utils' own decoder: no library for a format read once per preprocess.
    std::string quoted = "'";
    for (char ch : path) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    std::string cmd = "xz -dc -- " + quoted + "' 2>/dev/null";
    FILE* f = popen(cmd.c_str(), "r");
    if (!f) input_error("{}: cannot run `xz -dc` (install xz-utils)", path);
    std::string cur;
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
      for (size_t i = 0; i < n; ++i) {
        if (buf[i] == '\n') {
          if (!cur.empty() && cur.back() == '\r') cur.pop_back();
          lines.push_back(std::move(cur));
          cur.clear();
        } else {
          cur += buf[i];
        }
      }
    }
    if (!cur.empty()) lines.push_back(cur);
    int rc = pclose(f);
    if (rc != 0) input_error("{}: `xz -dc` failed (exit {}): not an xz file, or xz-utils is not installed", path, rc);
    return lines;
  }
  std::ifstream in(path);
  if (!in) input_error("{}: cannot read", path);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

std::string label_of(bool good) { return good ? "1" : "0"; }

}  // namespace

std::vector<data::Record> prm800k_bags(const std::vector<std::string>& lines, const std::string& where) {
  struct Step {
    std::string instruction;
    std::vector<std::string> before;
    std::string next;
    bool bad = false;
    int64_t line = 0;
  };
  std::vector<Step> rows;
  // Every path prefix (problem + steps) some row continues, and the rating of each step in place.
  std::set<std::pair<std::string, std::vector<std::string>>> continued;
  std::map<std::pair<std::string, std::vector<std::string>>, bool> bad_at;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
    json j = json::parse(lines[i], nullptr, false);
    auto is_strings = [](const json& v) {
      if (!v.is_array()) return false;
      for (auto& e : v)
        if (!e.is_string()) return false;
      return true;
    };
    if (j.is_discarded() || !j.is_object() || !j.contains("instruction") || !j["instruction"].is_string() ||
        !j.contains("responses") || !is_strings(j["responses"]) || !j.contains("next_response") ||
        !j["next_response"].is_string())
      input_error("{}:{}: not a PRM800K stepwise-critic row (instruction: string, responses: list of strings, "
                  "next_response: string)",
                  where, i + 1);
    Step s;
    s.instruction = j["instruction"].get<std::string>();
    s.before = j["responses"].get<std::vector<std::string>>();
    s.next = j["next_response"].get<std::string>();
    s.bad = j.contains("rating") && j["rating"].is_number() && j["rating"].get<double>() == -1.0;
    s.line = int64_t(i + 1);
    continued.insert({s.instruction, s.before});
    std::vector<std::string> path = s.before;
    path.push_back(s.next);
    // The same step in the same place can be rated more than once (the file repeats 4,841 of its
    // paths, 58 of them with other ratings): bad if any rating is -1.
    bad_at[{s.instruction, path}] |= s.bad;
    rows.push_back(std::move(s));
  }
  std::vector<data::Record> bags;
  std::set<std::pair<std::string, std::vector<std::string>>> seen;
  for (auto& s : rows) {
    std::vector<std::string> path = s.before;
    path.push_back(s.next);
    if (continued.count({s.instruction, path})) continue;  // not the end of a path
    if (!seen.insert({s.instruction, path}).second) continue;  // a repeated path is one bag
    data::Record r;
    r.text = s.instruction;
    r.words = path;
    bool good = true;
    for (size_t k = 0; k < path.size(); ++k) {
      std::vector<std::string> prefix(path.begin(), path.begin() + int64_t(k) + 1);
      auto it = bad_at.find({s.instruction, prefix});
      // A step no row rates (should not happen in this layout) stays unknown.
      r.tags.push_back(it == bad_at.end() ? "" : label_of(!it->second));
      if (it != bad_at.end() && it->second) good = false;
    }
    r.label = label_of(good);
    r.file = where;
    r.line = s.line;
    bags.push_back(std::move(r));
  }
  return bags;
}

std::vector<data::Record> read_prm800k(const std::string& path, data::ReadStats* stats) {
  auto bags = prm800k_bags(read_lines(path), path);
  if (stats) stats->records = int64_t(bags.size());
  return bags;
}

std::vector<data::Record> prm800k_raw_bags(const std::vector<std::string>& lines, const std::string& where) {
  std::vector<data::Record> bags;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
    json j = json::parse(lines[i], nullptr, false);
    const json* problem = nullptr;
    const json* steps = nullptr;
    if (!j.is_discarded() && j.is_object() && j.contains("question") && j["question"].is_object() &&
        j["question"].contains("problem") && j["question"]["problem"].is_string())
      problem = &j["question"]["problem"];
    if (!j.is_discarded() && j.is_object() && j.contains("label") && j["label"].is_object() &&
        j["label"].contains("steps") && j["label"]["steps"].is_array())
      steps = &j["label"]["steps"];
    if (!problem || !steps)
      input_error("{}:{}: not a PRM800K record (question.problem: string, label.steps: list), as openai/prm800k's "
                  "phase*_*.jsonl hold them",
                  where, i + 1);
    data::Record r;
    r.text = problem->get<std::string>();
    bool good = true;
    for (const json& step : *steps) {
      // The official preparation's test, in its order: completions, the first one, its text, its rating.
      if (!step.is_object() || !step.contains("completions") || !step["completions"].is_array() ||
          step["completions"].empty())
        continue;
      const json& first = step["completions"][0];
      if (!first.is_object() || !first.contains("text") || !first["text"].is_string() || !first.contains("rating") ||
          !first["rating"].is_number())
        continue;
      const bool bad = first["rating"].get<double>() == -1.0;
      r.words.push_back(first["text"].get<std::string>());
      r.tags.push_back(label_of(!bad));
      good = good && !bad;
    }
    if (r.words.empty()) continue;  // no rated first completion: the official code makes no bag either
    r.label = label_of(good);
    r.file = where;
    r.line = int64_t(i + 1);
    bags.push_back(std::move(r));
  }
  return bags;
}

std::vector<data::Record> read_prm800k_raw(const std::string& path, data::ReadStats* stats) {
  auto bags = prm800k_raw_bags(read_lines(path), path);
  if (stats) stats->records = int64_t(bags.size());
  return bags;
}

std::vector<data::Record> read_wikiqa(const std::string& path, data::ReadStats* stats) {
  std::vector<std::string> lines = read_lines(path);
  std::vector<data::Record> bags;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    auto f = data::split_delimited(lines[i], '\t', false);
    if (f.size() != 3 || (f[2] != "0" && f[2] != "1"))
      input_error("{}:{}: expected `question<TAB>sentence<TAB>0|1`: {}", path, i + 1, shorten(lines[i]));
    if (bags.empty() || bags.back().text != f[0]) {
      data::Record r;
      r.text = f[0];
      r.file = path;
      r.line = int64_t(i + 1);
      r.label = "0";
      bags.push_back(std::move(r));
    }
    bags.back().words.push_back(f[1]);
    bags.back().tags.push_back(f[2]);
    if (f[2] == "1") bags.back().label = "1";  // MAX: the question is answered if any sentence answers
  }
  if (stats) stats->records = int64_t(bags.size());
  return bags;
}

std::vector<data::Record> read_bags(const std::string& path, data::ReadStats* stats) {
  std::vector<std::string> lines = read_lines(path);
  std::vector<data::Record> bags;
  auto label_string = [&](const json& v, size_t line, const char* what) -> std::string {
    if (v.is_null()) return "";
    if (v.is_boolean()) return v.get<bool>() ? "1" : "0";
    if (v.is_number() && (v.get<double>() == 0 || v.get<double>() == 1)) return v.get<double>() == 1 ? "1" : "0";
    input_error("{}:{}: {} must be 0, 1, true or false", path, line, what);
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
    json j = json::parse(lines[i], nullptr, false);
    if (j.is_discarded() || !j.is_object()) input_error("{}:{}: not JSON: {}", path, i + 1, shorten(lines[i]));
    if (!j.contains("context") || !j["context"].is_string() || !j.contains("sentences") || !j["sentences"].is_array() ||
        !j.contains("label"))
      input_error("{}:{}: a bag needs `context` (string), `sentences` (list) and `label`", path, i + 1);
    data::Record r;
    r.text = j["context"].get<std::string>();
    for (auto& s : j["sentences"]) {
      if (!s.is_string()) input_error("{}:{}: `sentences` must hold strings", path, i + 1);
      r.words.push_back(s.get<std::string>());
    }
    if (r.words.empty()) input_error("{}:{}: a bag needs at least one sentence", path, i + 1);
    r.label = label_string(j["label"], i + 1, "`label`");
    if (r.label.empty()) input_error("{}:{}: `label` is null", path, i + 1);
    if (j.contains("sentence_labels") && !j["sentence_labels"].is_null()) {
      if (!j["sentence_labels"].is_array() || j["sentence_labels"].size() != r.words.size())
        input_error("{}:{}: `sentence_labels` must list one label per sentence ({})", path, i + 1, r.words.size());
      for (auto& v : j["sentence_labels"]) r.tags.push_back(label_string(v, i + 1, "`sentence_labels`"));
    } else {
      r.tags.assign(r.words.size(), "");
    }
    r.file = path;
    r.line = int64_t(i + 1);
    bags.push_back(std::move(r));
  }
  if (stats) stats->records = int64_t(bags.size());
  return bags;
}

std::vector<data::Record> hold_out(std::vector<data::Record> bags, double share, bool eval) {
  std::vector<data::Record> out;
  for (auto& b : bags) {
    // The first 8 hex digits of the context's SHA-256: the same split on every machine.
    uint64_t h = std::stoull(sha256_hex(b.text.data(), b.text.size()).substr(0, 8), nullptr, 16);
    bool held = double(h % 10000) < share * 10000.0;
    if (held == eval) out.push_back(std::move(b));
  }
  return out;
}

namespace {

class BagEncoder : public data::Encoder {
 public:
  explicit BagEncoder(double holdout) : holdout_(holdout) {}
  std::string kind() const override { return "bags"; }
  std::vector<data::Field> fields() const override {
    return {{"segments", data::DType::i32, data::Per::ragged},
            {"sentence_labels", data::DType::i32, data::Per::ragged},
            {"bag_label", data::DType::i32, data::Per::example}};
  }
  // "v2": repeated PRM800K paths are one bag (stores made before are remade).
  std::string settings() const override { return fmt::format("v2 holdout={}", holdout_); }
  void check(const DataConfig& c) const override {
    if (c.format != "prm800k" && c.format != "prm800k_raw" && c.format != "wikiqa" && c.format != "bags")
      input_error("key `data.format`: method fractal reads prm800k, prm800k_raw, wikiqa or bags (JSON lines), not `{}`",
                  c.format);
    if (c.kind != "auto" && c.kind != "bags")
      input_error("key `data.kind`: method fractal makes `bags` stores (or `auto`), not `{}`", c.kind);
  }
  std::vector<data::Record> read(const DataConfig& c, const std::string& split, const std::string& path,
                                 data::ReadStats* stats) const override {
    std::vector<data::Record> bags = c.format == "prm800k"       ? read_prm800k(path)
                                     : c.format == "prm800k_raw" ? read_prm800k_raw(path)
                                     : c.format == "wikiqa"      ? read_wikiqa(path)
                                                                 : read_bags(path);
    if (holdout_ > 0) bags = hold_out(std::move(bags), holdout_, split == "eval");
    if (stats) stats->records = int64_t(bags.size());
    return bags;
  }
  void encode(const data::Record& rec, const data::EncodeContext& ctx, data::Example& out) const override {
    auto& seg = out.put<int32_t>("segments");
    auto& lab = out.put<int32_t>("sentence_labels");
    auto add = [&](const std::string& text) {
      std::vector<int32_t> ids = ctx.tok.encode(text, true);
      const size_t max_len = size_t(ctx.data.max_len);
      if (ids.size() > max_len) {
        if (ctx.data.truncation == "error")
          input_error("{}: a text of {} tokens, more than data.max_len = {} (data.truncation: error)", rec.where(),
                      ids.size(), max_len);
        if (ctx.data.truncation == "left")  // keep the BOS and the last max_len - 1 tokens
          ids.erase(ids.begin() + 1, ids.end() - int64_t(max_len - 1));
        else
          ids.resize(max_len);
      }
      out.ids.insert(out.ids.end(), ids.begin(), ids.end());
      seg.push_back(int32_t(ids.size()));
    };
    add(rec.text);
    for (size_t i = 0; i < rec.words.size(); ++i) {
      add(rec.words[i]);
      const std::string& t = i < rec.tags.size() ? rec.tags[i] : std::string();
      lab.push_back(t.empty() ? -1 : t == "1" ? 1 : 0);
    }
    out.put<int32_t>("bag_label").push_back(rec.label == "1" ? 1 : 0);
  }
  // Each text is cut on its own in encode(); the bag as a whole is not a sequence.
  bool truncates() const override { return false; }

 private:
  double holdout_;
};

}  // namespace

std::unique_ptr<data::Encoder> make_encoder(double holdout) { return std::make_unique<BagEncoder>(holdout); }

}  // namespace kiln::methods::fractal
