#include "methods/lep/bench.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <sstream>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "core/recipe.h"
#include "data/chat.h"
#include "data/readers.h"
#include "data/tokenizer.h"
#include "model/generate.h"
#include "model/hf_io.h"

namespace kiln::lep {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}
}  // namespace

// ------------------------------------------------------------------ the table and the records

BenchTable read_table(const std::string& path) {
  BenchTable t;
  t.path = path;
  recipe::Node root = recipe::load(path);
  recipe::Section s = recipe::Section::root(root);
  t.chat = data::read_chat_format(s, "chat");
  recipe::Node* tasks = root.find("tasks");
  s.ignore("tasks");
  if (!tasks || tasks->kind != recipe::Node::Kind::List || tasks->list.empty())
    input_error("{}: key `tasks`: a list of tasks is required", tasks ? tasks->where() : path);
  std::set<std::string> names;
  for (size_t i = 0; i < tasks->list.size(); ++i) {
    recipe::Node& node = tasks->list[i];
    if (node.kind != recipe::Node::Kind::Map) input_error("{}: key `tasks[{}]`: a map of task keys", node.where(), i);
    recipe::Section ts(&node, fmt::format("tasks[{}]", i));
    TaskSpec task;
    task.where = node.where();
    task.name = ts.require_string("name");
    if (!names.insert(task.name).second) input_error("{}: task `{}` is named twice", ts.where("name"), task.name);
    task.file = ts.require_path("file");
    task.type = ts.get_choice("type", task.type, {"choice", "generate"});
    task.choices = ts.get_strings("choices", {});
    const std::vector<std::string> def =
        task.type == "choice" ? std::vector<std::string>{"accuracy"} : std::vector<std::string>{"em", "f1"};
    task.metrics = ts.get_strings("metrics", def);
    const std::set<std::string> valid =
        task.type == "choice" ? std::set<std::string>{"accuracy", "f1_macro", "accuracy_both"}
                              : std::set<std::string>{"em", "f1", "copy", "length_ratio", "em_squad", "f1_squad",
                                                      "copy_difflib", "length_tokens"};
    for (const auto& m : task.metrics)
      if (!valid.count(m))
        input_error("{}: key `{}`: `{}` is not a metric of a {} task (one of {})", ts.where("metrics"),
                    ts.key_path("metrics"), m, task.type, fmt::join(valid, ", "));
    std::vector<std::string> score_def;
    for (const auto& m : task.metrics)
      if (m != "length_ratio" && m != "length_tokens") score_def.push_back(m);
    task.score = ts.get_strings("score", score_def);
    for (const auto& m : task.score)
      if (std::find(task.metrics.begin(), task.metrics.end(), m) == task.metrics.end())
        input_error("{}: key `{}`: `{}` is not among the task's metrics", ts.where("score"), ts.key_path("score"), m);
    task.answer_field = ts.get_string("answer_field", "");
    task.stop = ts.get_strings("stop", {});
    task.max_new_tokens = ts.get_int("max_new_tokens", task.max_new_tokens, 1, 1 << 20);
    task.limit = ts.get_int("limit", 0, 0, int64_t(1) << 40);
    task.swap = ts.get_strings("swap", {});
    if (!task.swap.empty() && (task.type != "choice" || task.swap.size() != 2 || task.choices.size() != 2))
      input_error("{}: key `{}`: two input fields of a choice task with two choices (e.g. [choice1, choice2])",
                  ts.where("swap"), ts.key_path("swap"));
    const bool both = std::find(task.metrics.begin(), task.metrics.end(), "accuracy_both") != task.metrics.end();
    if (both && task.swap.empty())
      input_error("{}: key `{}`: accuracy_both asks each record in both orders: give `swap: [field, field]`",
                  ts.where("metrics"), ts.key_path("metrics"));
    if (task.type == "choice" && task.choices.size() < 2)
      input_error("{}: task `{}`: a choice task declares its answers: `choices: [...]` (two or more)", task.where,
                  task.name);
    if (task.type == "generate" && !task.choices.empty())
      input_error("{}: key `{}`: a generate task has no choices", ts.where("choices"), ts.key_path("choices"));
    ts.finish();
    t.tasks.push_back(std::move(task));
  }
  s.finish();
  return t;
}

std::string fill(const std::string& tmpl, const json& inputs) {
  if (!inputs.is_object()) return tmpl;
  std::string out;
  for (size_t i = 0; i < tmpl.size();) {
    if (tmpl[i] == '{') {
      const size_t close = tmpl.find('}', i + 1);
      if (close != std::string::npos) {
        const std::string key = tmpl.substr(i + 1, close - i - 1);
        auto it = inputs.find(key);
        if (it != inputs.end()) {
          out += it->is_string() ? it->get<std::string>() : it->dump();
          i = close + 1;
          continue;
        }
      }
    }
    out += tmpl[i++];
  }
  return out;
}

std::vector<BenchRecord> read_records(const TaskSpec& task) {
  std::ifstream in(task.file, std::ios::binary);
  if (!in) input_error("{}: cannot open the records of task `{}` (set in {})", task.file, task.name, task.where);
  std::vector<BenchRecord> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (trim(line).empty()) continue;
    if (task.limit > 0 && int64_t(out.size()) >= task.limit) break;
    BenchRecord r;
    r.where = fmt::format("{}:{}", task.file, n);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      input_error("{}: not a JSON record ({})", r.where, e.what());
    }
    if (!j.is_object() || !j.contains("messages") || !j["messages"].is_array() || j["messages"].empty())
      input_error("{}: field `messages`: a non-empty list of {{role, content}} is required", r.where);
    const json inputs = j.value("inputs", json::object());
    for (const auto& m : j["messages"]) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
          !m["content"].is_string())
        input_error("{}: field `messages`: each message is {{\"role\": ..., \"content\": \"...\"}}", r.where);
      std::string role = m["role"].get<std::string>();
      if (role == "bot") role = "assistant";
      if (role != "system" && role != "user" && role != "assistant")
        input_error("{}: message role `{}`: one of system, user, assistant (or bot)", r.where, role);
      r.messages.push_back({role, fill(m["content"].get<std::string>(), inputs)});
    }
    if (!j.contains("outputs")) input_error("{}: field `outputs` is missing", r.where);
    const json& o = j["outputs"];
    auto gold_of = [&](const json& v) -> std::string {
      if (v.is_string()) return v.get<std::string>();
      if (v.is_number() || v.is_boolean()) return v.dump();
      if (v.is_object() && !task.answer_field.empty() && v.contains(task.answer_field) && v[task.answer_field].is_string())
        return v[task.answer_field].get<std::string>();
      input_error("{}: field `outputs`: {} is not an answer{}", r.where, v.dump().substr(0, 60),
                  task.answer_field.empty() ? " (objects need the task's `answer_field`)"
                                            : fmt::format(" (no string field `{}`)", task.answer_field));
    };
    if (o.is_array()) {
      for (const auto& v : o) r.golds.push_back(gold_of(v));
    } else {
      r.golds.push_back(gold_of(o));
    }
    if (r.golds.empty()) input_error("{}: field `outputs`: no answer", r.where);
    if (task.type == "choice")
      for (const auto& g : r.golds)
        if (std::find(task.choices.begin(), task.choices.end(), g) == task.choices.end())
          input_error("{}: gold answer `{}` is not one of task `{}`'s choices ({})", r.where, g, task.name,
                      fmt::join(task.choices, ", "));
    r.meta = j.value("meta", json::object());
    if (!task.swap.empty()) {
      // llmtf's PARus asks every record a second time with the two options exchanged.
      json sw = inputs;
      for (const auto& f : task.swap)
        if (!sw.contains(f)) input_error("{}: field `inputs.{}` (task `{}`'s swap) is missing", r.where, f, task.name);
      std::swap(sw[task.swap[0]], sw[task.swap[1]]);
      for (const auto& m : j["messages"]) {
        std::string role = m["role"].get<std::string>();
        r.swapped.push_back({role == "bot" ? "assistant" : role, fill(m["content"].get<std::string>(), sw)});
      }
      r.swapped_gold = r.golds[0] == task.choices[0] ? task.choices[1] : task.choices[0];
    }
    out.push_back(std::move(r));
  }
  if (out.empty()) input_error("{}: no records (task `{}`)", task.file, task.name);
  return out;
}

// ------------------------------------------------------------------ metrics

namespace {

using data::code_points;

bool is_punct(uint32_t c) {
  if (c < 0x80) return std::ispunct(int(c)) != 0;
  // General punctuation, guillemets, CJK and full-width punctuation: what Russian and English
  // answers carry (the dashes, quotes and ellipsis of Russian typography among them).
  return (c >= 0x2010 && c <= 0x205E) || c == 0xAB || c == 0xBB || (c >= 0x3000 && c <= 0x303F) ||
         (c >= 0xFF01 && c <= 0xFF0F) || c == 0xA0 || c == 0xB7 || c == 0xBF || c == 0xA1;
}

uint32_t lower(uint32_t c) {
  if (c < 0x80) return uint32_t(std::tolower(int(c)));
  if (c >= 0x410 && c <= 0x42F) return c + 0x20;  // Cyrillic А-Я
  if (c >= 0x400 && c <= 0x40F) return c + 0x50;  // Ѐ-Џ (Ё among them)
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 0x20;  // Latin-1
  return c;
}

std::string utf8(uint32_t c) {
  std::string s;
  if (c < 0x80) {
    s += char(c);
  } else if (c < 0x800) {
    s += char(0xC0 | (c >> 6));
    s += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += char(0xE0 | (c >> 12));
    s += char(0x80 | ((c >> 6) & 0x3F));
    s += char(0x80 | (c & 0x3F));
  } else {
    s += char(0xF0 | (c >> 18));
    s += char(0x80 | ((c >> 12) & 0x3F));
    s += char(0x80 | ((c >> 6) & 0x3F));
    s += char(0x80 | (c & 0x3F));
  }
  return s;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : normalize_answer(s)) {
    if (c == ' ') {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace

std::string normalize_answer(const std::string& s) {
  std::string out;
  bool space = false;
  for (uint32_t c : code_points(s)) {
    if (is_punct(c) || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += utf8(lower(c));
  }
  return out;
}

// F1 of two bags of words (SQuAD's): 1 when both are empty, 0 when only one is.
static double bag_f1(const std::vector<std::string>& p, const std::vector<std::string>& g) {
  if (p.empty() || g.empty()) return p.empty() && g.empty() ? 1.0 : 0.0;
  std::map<std::string, int64_t> count;
  for (const auto& w : g) ++count[w];
  int64_t same = 0;
  for (const auto& w : p)
    if (count[w]-- > 0) ++same;
  if (same == 0) return 0.0;
  const double precision = double(same) / double(p.size()), recall = double(same) / double(g.size());
  return 2 * precision * recall / (precision + recall);
}

double token_f1(const std::string& pred, const std::string& gold) { return bag_f1(words(pred), words(gold)); }

double lcs_ratio(const std::string& a, const std::string& b) {
  const auto x = code_points(a), y = code_points(b);
  if (x.empty() && y.empty()) return 1.0;
  std::vector<int32_t> prev(y.size() + 1, 0), cur(y.size() + 1, 0);
  for (size_t i = 1; i <= x.size(); ++i) {
    for (size_t j = 1; j <= y.size(); ++j)
      cur[j] = x[i - 1] == y[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return 2.0 * prev[y.size()] / double(x.size() + y.size());
}

std::string squad_normalize(const std::string& s) {
  std::string t;
  for (uint32_t c : code_points(s)) {
    if (c < 0x80 && std::ispunct(int(c))) continue;  // string.punctuation: ASCII only, so "Санкт-Петербург" joins
    t += utf8(lower(c));
  }
  // \b(a|an|the)\b -> " "; Python's \b counts every non-ASCII letter as a word character, as here.
  auto word = [](unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; };
  std::string u;
  for (size_t i = 0; i < t.size();) {
    if (!word(static_cast<unsigned char>(t[i]))) {
      u += t[i++];
      continue;
    }
    size_t j = i;
    while (j < t.size() && word(static_cast<unsigned char>(t[j]))) ++j;
    const std::string w = t.substr(i, j - i);
    u += (w == "a" || w == "an" || w == "the") ? std::string(" ") : w;
    i = j;
  }
  std::string out;
  std::istringstream in(u);
  for (std::string w; in >> w;) out += (out.empty() ? "" : " ") + w;
  return out;
}

double squad_f1(const std::string& pred, const std::string& gold) {
  std::vector<std::string> p, g;
  std::istringstream ps(squad_normalize(pred)), gs(squad_normalize(gold));
  for (std::string w; ps >> w;) p.push_back(w);
  for (std::string w; gs >> w;) g.push_back(w);
  return bag_f1(p, g);
}

int64_t difflib_matched(const std::string& a_text, const std::string& b_text) {
  const auto a = code_points(a_text), b = code_points(b_text);
  std::map<uint32_t, std::vector<int64_t>> b2j;
  for (int64_t j = 0; j < int64_t(b.size()); ++j) b2j[b[size_t(j)]].push_back(j);
  // find_longest_match without junk: the longest block, the earliest in a, then in b, on ties.
  auto longest = [&](int64_t alo, int64_t ahi, int64_t blo, int64_t bhi) {
    int64_t besti = alo, bestj = blo, bestsize = 0;
    std::map<int64_t, int64_t> j2len;
    for (int64_t i = alo; i < ahi; ++i) {
      std::map<int64_t, int64_t> next;
      auto it = b2j.find(a[size_t(i)]);
      if (it != b2j.end())
        for (int64_t j : it->second) {
          if (j < blo) continue;
          if (j >= bhi) break;
          auto prev = j2len.find(j - 1);
          const int64_t k = (prev == j2len.end() ? 0 : prev->second) + 1;
          next[j] = k;
          if (k > bestsize) besti = i - k + 1, bestj = j - k + 1, bestsize = k;
        }
      j2len.swap(next);
    }
    return std::array<int64_t, 3>{besti, bestj, bestsize};
  };
  int64_t matched = 0;
  std::vector<std::array<int64_t, 4>> queue{{0, int64_t(a.size()), 0, int64_t(b.size())}};
  while (!queue.empty()) {
    const auto [alo, ahi, blo, bhi] = queue.back();
    queue.pop_back();
    const auto [i, j, k] = longest(alo, ahi, blo, bhi);
    if (k == 0) continue;
    matched += k;
    if (alo < i && blo < j) queue.push_back({alo, i, blo, j});
    if (i + k < ahi && j + k < bhi) queue.push_back({i + k, ahi, j + k, bhi});
  }
  return matched;
}

double length_tokens(int64_t predicted, int64_t gold, int64_t max_new_tokens) {
  const double s = double(std::min(gold, max_new_tokens)), p = double(predicted);
  if (p <= 0 || s <= 0) return 0.0;
  return std::min(p / s, s / p);
}

double macro_f1(const std::vector<std::string>& pred, const std::vector<std::string>& gold,
                const std::vector<std::string>& classes) {
  double sum = 0;
  for (const auto& c : classes) {
    int64_t tp = 0, fp = 0, fn = 0;
    for (size_t i = 0; i < pred.size(); ++i) {
      tp += pred[i] == c && gold[i] == c;
      fp += pred[i] == c && gold[i] != c;
      fn += pred[i] != c && gold[i] == c;
    }
    sum += tp == 0 ? 0.0 : 2.0 * double(tp) / double(2 * tp + fp + fn);
  }
  return classes.empty() ? 0.0 : sum / double(classes.size());
}

// ------------------------------------------------------------------ running a task

namespace {

// Keeps the first token (BOS) and the last `keep - 1`.
bool truncate(std::vector<int32_t>& ids, int64_t keep) {
  if (int64_t(ids.size()) <= keep || keep < 2) return false;
  ids.erase(ids.begin() + 1, ids.end() - (keep - 1));
  return true;
}

// Sum of log p(answer tokens | prompt) for each answer, in one padded batch.
std::vector<double> loglikelihoods(model::Llama& model, const std::vector<int32_t>& prompt,
                                   const std::vector<std::vector<int32_t>>& answers) {
  size_t T = 0;
  for (const auto& a : answers) T = std::max(T, prompt.size() + a.size());
  const int64_t B = int64_t(answers.size());
  at::Tensor ids = at::zeros({B, int64_t(T)}, at::kLong), mask = at::zeros({B, int64_t(T)}, at::kLong);
  auto ia = ids.accessor<int64_t, 2>();
  auto ma = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    size_t t = 0;
    for (int32_t v : prompt) ia[b][int64_t(t)] = v, ma[b][int64_t(t++)] = 1;
    for (int32_t v : answers[size_t(b)]) ia[b][int64_t(t)] = v, ma[b][int64_t(t++)] = 1;
  }
  const at::Tensor logp =
      at::log_softmax(model->forward(ids.to(model->device()), mask.to(model->device())).to(at::kFloat), -1).cpu();
  auto la = logp.accessor<float, 3>();
  std::vector<double> out;
  for (int64_t b = 0; b < B; ++b) {
    double s = 0;
    for (size_t k = 0; k < answers[size_t(b)].size(); ++k)
      s += la[b][int64_t(prompt.size() + k - 1)][answers[size_t(b)][k]];
    out.push_back(s);
  }
  return out;
}

}  // namespace

TaskResult run_task(model::Llama& model, const data::Tokenizer& tok, const std::map<std::string, int32_t>& specials,
                    const ChatFormat& chat, const TaskSpec& task, const BenchOptions& opts) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const std::vector<BenchRecord> records = read_records(task);
  const int64_t max_len = opts.max_len > 0 ? opts.max_len : model->config().max_position_embeddings;
  TaskResult r;
  r.name = task.name;
  r.records = int64_t(records.size());
  std::vector<std::vector<int32_t>> answers;
  int64_t longest = 0;
  for (const auto& c : task.choices) {
    answers.push_back(tok.encode(c, false, false));
    if (answers.back().empty()) input_error("{}: task `{}`: choice `{}` encodes to no tokens", task.where, task.name, c);
    longest = std::max<int64_t>(longest, int64_t(answers.back().size()));
  }
  std::vector<std::string> preds, golds;
  double em = 0, f1 = 0, copy = 0, length = 0, em_sq = 0, f1_sq = 0, copy_dl = 0, len_tok = 0;
  int64_t both = 0;
  const int32_t turn_end = data::turn_end_id(chat, tok, specials);
  for (const auto& rec : records) {
    std::vector<int32_t> prompt = data::render(chat, rec.messages, tok, specials);
    if (prompt.empty()) input_error("{}: the prompt is empty (chat format `{}` has no prefix)", rec.where, chat.name);
    const int64_t room = max_len - (task.type == "choice" ? longest : task.max_new_tokens);
    r.truncated += truncate(prompt, room);
    json p = {{"where", rec.where}, {"meta", rec.meta}, {"gold", rec.golds.size() == 1 ? json(rec.golds[0]) : json(rec.golds)}};
    std::string pred;
    if (task.type == "choice") {
      const auto ll = loglikelihoods(model, prompt, answers);
      const size_t best = size_t(std::max_element(ll.begin(), ll.end()) - ll.begin());
      pred = task.choices[best];
      json lls = json::object();
      for (size_t k = 0; k < ll.size(); ++k) lls[task.choices[k]] = ll[k];
      p["loglikelihood"] = lls;
      preds.push_back(pred);
      golds.push_back(rec.golds[0]);
      if (!task.swap.empty()) {
        std::vector<int32_t> sp = data::render(chat, rec.swapped, tok, specials);
        r.truncated += truncate(sp, room);
        const auto sl = loglikelihoods(model, sp, answers);
        const std::string spred = task.choices[size_t(std::max_element(sl.begin(), sl.end()) - sl.begin())];
        p["swapped_prediction"] = spred;
        both += pred == rec.golds[0] && spred == rec.swapped_gold;
      }
    } else {
      model::GenerateOptions g;
      g.max_new_tokens = task.max_new_tokens;
      if (turn_end >= 0) g.stop_ids = {turn_end};
      std::vector<int64_t> in(prompt.begin(), prompt.end());
      const auto out = model::generate(model, in, g);
      pred = tok.decode(std::vector<int32_t>(out.begin(), out.end()));
      for (const auto& s : task.stop)
        if (auto at = pred.find(s); at != std::string::npos) pred.resize(at);
      pred = trim(pred);
      double best_em = 0, best_f1 = 0, best_copy = 0, best_em_sq = 0, best_f1_sq = 0;
      for (const auto& gold : rec.golds) {
        best_em = std::max(best_em, normalize_answer(pred) == normalize_answer(gold) ? 1.0 : 0.0);
        best_f1 = std::max(best_f1, token_f1(pred, gold));
        best_copy = std::max(best_copy, lcs_ratio(pred, gold));
        best_em_sq = std::max(best_em_sq, squad_normalize(pred) == squad_normalize(gold) ? 1.0 : 0.0);
        best_f1_sq = std::max(best_f1_sq, squad_f1(pred, gold));
      }
      em_sq += best_em_sq;
      f1_sq += best_f1_sq;
      // llmtf's CopyText: against the first gold (the text to copy), both stripped; an empty
      // prediction scores 0 on both.
      const std::string gold0 = trim(rec.golds[0]);
      const int64_t plen = int64_t(code_points(pred).size());
      if (!out.empty() && plen > 0) {
        copy_dl += double(difflib_matched(gold0, pred)) / double(plen) >= 0.99 ? 1.0 : 0.0;
        // The gold's tokens as the model would write them: after a space where its tokenizer does
        // not put one itself (byte-level BPE).
        const auto gt = tok.encode(tok.kind() == "sentencepiece" ? rec.golds[0] : " " + rec.golds[0], false);
        len_tok += length_tokens(int64_t(out.size()), int64_t(gt.size()), task.max_new_tokens);
      }
      em += best_em;
      f1 += best_f1;
      copy += best_copy >= 0.99 ? 1.0 : 0.0;
      const double glen = double(code_points(rec.golds[0]).size());
      length += glen > 0 ? double(code_points(pred).size()) / glen : 0.0;
      p["lcs_ratio"] = best_copy;
    }
    p["prediction"] = pred;
    r.predictions.push_back(std::move(p));
  }
  const double n = double(records.size());
  for (const auto& m : task.metrics) {
    if (m == "accuracy") {
      int64_t right = 0;
      for (size_t i = 0; i < preds.size(); ++i) right += preds[i] == golds[i];
      r.metrics[m] = double(right) / n;
    } else if (m == "f1_macro") {
      r.metrics[m] = macro_f1(preds, golds, task.choices);
    } else if (m == "em") {
      r.metrics[m] = em / n;
    } else if (m == "f1") {
      r.metrics[m] = f1 / n;
    } else if (m == "copy") {
      r.metrics[m] = copy / n;
    } else if (m == "length_ratio") {
      r.metrics[m] = length / n;
    } else if (m == "accuracy_both") {
      r.metrics[m] = double(both) / n;
    } else if (m == "em_squad") {
      r.metrics[m] = em_sq / n;
    } else if (m == "f1_squad") {
      r.metrics[m] = f1_sq / n;
    } else if (m == "copy_difflib") {
      r.metrics[m] = copy_dl / n;
    } else if (m == "length_tokens") {
      r.metrics[m] = len_tok / n;
    }
  }
  for (const auto& m : task.score) r.score += r.metrics[m] / double(task.score.size());
  if (was_training) model->train();
  return r;
}

}  // namespace kiln::lep
