#include "methods/uniner/instructions.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace kiln::methods::uniner {

const char* const kReadReply = "I've read this text.";

namespace {
const char* const kQuestionHead = "What describes ";
const char* const kQuestionTail = " in the text?";

// "B-PER" -> ("B", "PER"); "O" or anything else -> ("O", "").
std::pair<char, std::string> split_tag(const std::string& t) {
  if (t.size() > 2 && (t[0] == 'B' || t[0] == 'I') && t[1] == '-') return {t[0], t.substr(2)};
  return {'O', ""};
}

std::string join_words(const std::vector<std::string>& w, size_t b, size_t e) {
  std::string s;
  for (size_t i = b; i < e; ++i) {
    if (i > b) s.push_back(' ');
    s += w[i];
  }
  return s;
}

void push_unique(std::vector<std::string>& v, const std::string& s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
}
}  // namespace

std::string question_for(const std::string& type) { return kQuestionHead + type + kQuestionTail; }

std::vector<std::pair<std::string, std::string>> mentions(const std::vector<std::string>& words,
                                                          const std::vector<std::string>& tags) {
  KILN_CHECK(words.size() == tags.size(), "mentions: {} words, {} tags", words.size(), tags.size());
  std::vector<std::pair<std::string, std::string>> out;
  size_t start = 0;
  std::string cur;  // type of the open mention; "" when none
  auto close = [&](size_t end) {
    if (!cur.empty()) out.emplace_back(cur, join_words(words, start, end));
    cur.clear();
  };
  for (size_t i = 0; i < tags.size(); ++i) {
    auto [bio, type] = split_tag(tags[i]);
    if (bio == 'O') {
      close(i);
    } else if (bio == 'B' || type != cur) {
      close(i);
      cur = type, start = i;
    }
  }
  close(tags.size());
  return out;
}

std::vector<std::string> tag_types(const std::vector<data::Record>& records) {
  std::set<std::string> types;
  for (const auto& r : records)
    for (const auto& t : r.tags)
      if (auto [bio, type] = split_tag(t); bio != 'O') types.insert(type);
  return {types.begin(), types.end()};
}

std::vector<Passage> passages_from_tags(const std::vector<data::Record>& records,
                                        const std::vector<std::pair<std::string, std::string>>& types) {
  std::vector<Passage> out;
  out.reserve(records.size());
  for (const auto& r : records) {
    Passage p;
    p.text = join_words(r.words, 0, r.words.size());
    p.file = r.file, p.line = r.line;
    auto found = mentions(r.words, r.tags);
    for (const auto& [tag, name] : types) {
      Question q;
      q.type = name;
      for (const auto& [t, text] : found)
        if (t == tag) push_unique(q.answer, text);
      p.questions.push_back(std::move(q));
    }
    out.push_back(std::move(p));
  }
  return out;
}

namespace {
// A gold answer: a JSON list of strings.
bool parse_list(const std::string& s, std::vector<std::string>& out) {
  nlohmann::json j = nlohmann::json::parse(s, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return false;
  out.clear();
  for (const auto& e : j) {
    if (!e.is_string()) return false;
    push_unique(out, e.get<std::string>());
  }
  return true;
}

// The type of a question "What describes {type} in the text?"; "" when it is not one.
std::string type_of(const std::string& q) {
  const std::string head = kQuestionHead, tail = kQuestionTail;
  if (q.size() <= head.size() + tail.size() || q.compare(0, head.size(), head) != 0 ||
      q.compare(q.size() - tail.size(), tail.size(), tail) != 0)
    return "";
  return q.substr(head.size(), q.size() - head.size() - tail.size());
}

bool is_human(const data::Turn& t) { return t.from == "human" || t.from == "user"; }
bool is_gpt(const data::Turn& t) { return t.from == "gpt" || t.from == "assistant"; }
}  // namespace

std::vector<Passage> passages_from_conversations(const std::vector<data::Record>& records, bool skip_bad,
                                                 data::ReadStats* stats) {
  std::vector<Passage> out;
  for (const auto& r : records) {
    std::string why;
    Passage p;
    p.file = r.file, p.line = r.line;
    const auto& t = r.turns;
    if (t.size() < 2 || !is_human(t[0]) || t[0].value.rfind("Text: ", 0) != 0 || !is_gpt(t[1])) {
      why = "a conversation must open with human \"Text: ...\" and the gpt reply";
    } else {
      p.text = t[0].value.substr(6);
      for (size_t i = 2; i < t.size() && why.empty(); i += 2) {
        Question q;
        if (i + 1 >= t.size() || !is_human(t[i]) || !is_gpt(t[i + 1]))
          why = fmt::format("turn {} must be a human question followed by the gpt answer", i + 1);
        else if ((q.type = type_of(t[i].value)).empty())
          why = fmt::format("turn {} is not \"What describes <type> in the text?\"", i + 1);
        else if (!parse_list(t[i + 1].value, q.answer))
          why = fmt::format("turn {}: the answer is not a JSON list of strings", i + 2);
        else
          p.questions.push_back(std::move(q));
      }
    }
    if (why.empty()) {
      out.push_back(std::move(p));
      continue;
    }
    if (!skip_bad) input_error("{}: {}", r.where(), why);
    if (stats) {
      if (stats->skipped++ == 0) stats->first_skip = r.where() + ": " + why;
    }
  }
  return out;
}

int64_t add_negative_types(std::vector<Passage>& passages, double rate, uint64_t seed) {
  if (rate <= 0) return 0;
  // Frequency of each type: the passages in which it has a mention. Ordered (std::map) so the draw
  // is the same on every rank and every run.
  std::map<std::string, int64_t> freq;
  for (const auto& p : passages)
    for (const auto& q : p.questions)
      if (!q.answer.empty()) ++freq[q.type];
  std::vector<std::string> types;
  std::vector<double> cum;  // cumulative frequency, for drawing by binary search
  double total = 0;
  for (const auto& [t, n] : freq) types.push_back(t), cum.push_back(total += double(n));
  if (types.empty()) return 0;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  int64_t added = 0;
  for (auto& p : passages) {
    // How many: rate x questions, the fraction drawn as a Bernoulli trial.
    const double want = rate * double(p.questions.size());
    int64_t k = int64_t(std::floor(want)) + (unit(rng) < want - std::floor(want) ? 1 : 0);
    std::set<std::string> taken;
    for (const auto& q : p.questions) taken.insert(q.type);
    k = std::min<int64_t>(k, int64_t(types.size()) - int64_t(taken.size()));
    // Successive draws by frequency, redrawing a type the passage already asks: sampling without
    // replacement in proportion to frequency among the types it lacks. The bound on redraws only
    // matters when the few types left are very rare.
    for (int64_t j = 0, tries = 0; j < k && tries < 1000 * (k + 1); ++tries) {
      const double x = unit(rng) * total;
      size_t i = size_t(std::upper_bound(cum.begin(), cum.end(), x) - cum.begin());
      i = std::min(i, types.size() - 1);
      if (!taken.insert(types[i]).second) continue;
      p.questions.push_back({types[i], {}});
      ++j, ++added;
    }
  }
  return added;
}

std::vector<Passage> apply_weight(const std::vector<Passage>& passages, double weight, uint64_t seed) {
  std::vector<Passage> out;
  const int64_t whole = int64_t(std::floor(weight));
  const double frac = weight - double(whole);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (const auto& p : passages) {
    int64_t n = whole + (frac > 0 && unit(rng) < frac ? 1 : 0);
    for (int64_t i = 0; i < n; ++i) out.push_back(p);
  }
  return out;
}

void shuffle_questions(std::vector<Passage>& passages, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (auto& p : passages)
    for (size_t i = p.questions.size(); i > 1; --i) {
      const size_t j = size_t(rng() % i);  // Fisher-Yates from the raw draws: same order everywhere
      std::swap(p.questions[i - 1], p.questions[j]);
    }
}

namespace {
std::string text_turn(const Passage& p, const std::string& prefix) {
  return (prefix.empty() ? std::string() : prefix + "\n") + "Text: " + p.text;
}
}  // namespace

data::Record training_record(const Passage& p, const std::string& prefix) {
  data::Record r;
  r.file = p.file, r.line = p.line;
  r.turns.push_back({"human", text_turn(p, prefix)});
  r.turns.push_back({"gpt", kReadReply});
  for (const auto& q : p.questions) {
    r.turns.push_back({"human", question_for(q.type)});
    r.turns.push_back({"gpt", answer_json(q.answer)});
  }
  return r;
}

std::vector<data::Record> evaluation_records(const Passage& p, const std::string& prefix, const std::string& dataset) {
  std::vector<data::Record> out;
  for (const auto& q : p.questions) {
    data::Record r;
    r.file = p.file, r.line = p.line;
    r.label = dataset + ":" + q.type;
    r.turns = {{"human", text_turn(p, prefix)},
               {"gpt", kReadReply},
               {"human", question_for(q.type)},
               {"gpt", answer_json(q.answer)}};
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<data::Record> evaluation_records_from_conversations(const std::vector<data::Record>& records,
                                                                const std::string& dataset) {
  std::vector<data::Record> out;
  for (const auto& r : records) {
    const auto& t = r.turns;
    std::string type;
    if (t.size() < 2 || !is_gpt(t.back()) || !is_human(t[t.size() - 2]) || (type = type_of(t[t.size() - 2].value)).empty())
      input_error("{}: an evaluation conversation must end with \"What describes <type> in the text?\" and its gold answer",
                  r.where());
    data::Record e = r;
    e.label = dataset + ":" + type;
    out.push_back(std::move(e));
  }
  return out;
}

std::string answer_json(const std::vector<std::string>& mentions) {
  std::string s = "[";
  for (size_t i = 0; i < mentions.size(); ++i) {
    if (i) s += ", ";
    s += nlohmann::json(mentions[i]).dump();
  }
  return s + "]";
}

}  // namespace kiln::methods::uniner
