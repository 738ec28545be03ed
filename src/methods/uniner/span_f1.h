// UniversalNER's evaluation (official src/eval/evaluate.py; ../shared/METHODS.md section 2): the
// generated text after the last "ASSISTANT:", stripped, a [...] list at its very start parsed as
// JSON (unparseable: empty), each item normalised as SQuAD answers are and duplicates dropped; then
// over all questions of a dataset, micro precision, recall and F1 from the counts of predicted
// items found in the gold list, predicted items and gold items.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::methods::uniner {

// Lower-case, drop ASCII punctuation, drop the words a / an / the, collapse white space. As
// Python's str.lower and \b would, except that only ASCII letters change case and every non-ASCII
// character counts as a letter.
std::string normalize(const std::string& s);

// Where the answer list may be. `start`: only at the start of the stripped text, as the official
// parser reads it (re.match), so an output that talks before its list scores nothing. `anywhere`:
// the first list found anywhere (kiln's reading before issue 32; kept for comparison).
enum class AnswerAt { start, anywhere };
AnswerAt parse_answer_at(const std::string& s);  // "start" | "anywhere"; InternalError otherwise
const char* answer_at_name(AnswerAt a);

// The answer list of a model output (or of a gold answer): the text after the last "ASSISTANT:"
// (all of it when there is none) with surrounding white space stripped, a `[` (at its start, or the
// first anywhere, by `at`) up to the next `]` on the same line, parsed as JSON; each string item
// normalised, duplicates dropped, order kept. Not a JSON list of strings: empty, and *parsed (when
// given) false.
std::vector<std::string> parse_answer(const std::string& output, bool* parsed = nullptr,
                                      AnswerAt at = AnswerAt::start);

struct Counts {
  int64_t correct = 0, predicted = 0, gold = 0;
  void add(const std::vector<std::string>& pred, const std::vector<std::string>& gold_items);
  Counts& operator+=(const Counts& o) {
    correct += o.correct, predicted += o.predicted, gold += o.gold;
    return *this;
  }
  // With 1e-10 in each denominator, as the official script.
  double precision() const;
  double recall() const;
  double f1() const;
};

}  // namespace kiln::methods::uniner
