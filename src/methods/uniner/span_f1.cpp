#include "methods/uniner/span_f1.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace kiln::methods::uniner {

namespace {
bool word_char(unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; }
}  // namespace

std::string normalize(const std::string& s) {
  // lower -> remove punctuation (Python's string.punctuation) -> remove articles -> fix white space
  std::string t;
  t.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x80 && std::ispunct(c)) continue;
    t.push_back(c < 0x80 ? char(std::tolower(c)) : char(c));
  }
  // \b(a|an|the)\b -> " ": a run of word characters that is exactly an article.
  std::string u;
  for (size_t i = 0; i < t.size();) {
    if (!word_char(static_cast<unsigned char>(t[i]))) {
      u.push_back(t[i++]);
      continue;
    }
    size_t j = i;
    while (j < t.size() && word_char(static_cast<unsigned char>(t[j]))) ++j;
    std::string w = t.substr(i, j - i);
    u += (w == "a" || w == "an" || w == "the") ? std::string(" ") : w;
    i = j;
  }
  // " ".join(text.split()): Python splits on ASCII white space (and a few Unicode spaces, ignored).
  std::string out;
  for (size_t i = 0; i < u.size();) {
    while (i < u.size() && std::isspace(static_cast<unsigned char>(u[i]))) ++i;
    size_t j = i;
    while (j < u.size() && !std::isspace(static_cast<unsigned char>(u[j]))) ++j;
    if (j > i) {
      if (!out.empty()) out.push_back(' ');
      out.append(u, i, j - i);
    }
    i = j;
  }
  return out;
}

AnswerAt parse_answer_at(const std::string& s) {
  if (s == "start") return AnswerAt::start;
  if (s == "anywhere") return AnswerAt::anywhere;
  throw InternalError("answer_at " + s);
}

const char* answer_at_name(AnswerAt a) { return a == AnswerAt::start ? "start" : "anywhere"; }

std::vector<std::string> parse_answer(const std::string& output, bool* parsed, AnswerAt at) {
  if (parsed) *parsed = false;
  std::string text = output;
  const char* tag = "ASSISTANT:";
  if (size_t p = text.rfind(tag); p != std::string::npos) text = text.substr(p + std::strlen(tag));
  // get_response's .strip(): the answer usually follows "ASSISTANT:" after a space.
  const char* ws = " \t\n\r\f\v";
  const size_t first = text.find_first_not_of(ws);
  text = first == std::string::npos ? std::string() : text.substr(first, text.find_last_not_of(ws) - first + 1);
  // r"\[(.*?)\]": `.` does not cross a newline.
  size_t open = std::string::npos, close = std::string::npos;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '[') {
      size_t j = i + 1;
      while (j < text.size() && text[j] != ']' && text[j] != '\n') ++j;
      if (j < text.size() && text[j] == ']') {
        open = i, close = j;
        break;
      }
    }
    if (at == AnswerAt::start) break;  // re.match: the list starts the text or there is none
  }
  if (open == std::string::npos) return {};
  nlohmann::json j = nlohmann::json::parse(text.substr(open, close - open + 1), nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return {};
  std::vector<std::string> items;
  for (const auto& e : j) {
    if (!e.is_string()) return {};  // the official parser fails (and returns []) on such an item
    std::string n = normalize(e.get<std::string>());
    if (std::find(items.begin(), items.end(), n) == items.end()) items.push_back(n);
  }
  if (parsed) *parsed = true;
  return items;
}

void Counts::add(const std::vector<std::string>& pred, const std::vector<std::string>& gold_items) {
  for (const auto& p : pred)
    if (std::find(gold_items.begin(), gold_items.end(), p) != gold_items.end()) ++correct;
  predicted += int64_t(pred.size());
  gold += int64_t(gold_items.size());
}

double Counts::precision() const { return double(correct) / (double(predicted) + 1e-10); }
double Counts::recall() const { return double(correct) / (double(gold) + 1e-10); }
double Counts::f1() const {
  const double p = precision(), r = recall();
  return 2 * p * r / (p + r + 1e-10);
}

}  // namespace kiln::methods::uniner
