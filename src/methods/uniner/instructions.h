// UniversalNER's instruction data (../shared/METHODS.md section 2): NER sources turned into
// passages with one question per entity type, negative types, the "Dataset: {name}" prefix of the
// supervised setting, and the conversations the model trains on or is asked. Plain code over
// data::Record, so the tests check it without a model.
#pragma once
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "data/readers.h"

namespace kiln::methods::uniner {

// The question each turn asks, and what the first exchange says.
std::string question_for(const std::string& type);  // "What describes {type} in the text?"
extern const char* const kReadReply;                 // "I've read this text."

struct Question {
  std::string type;
  std::vector<std::string> answer;  // mention strings in order of appearance, each once; empty: none
};

struct Passage {
  std::string text;
  std::vector<Question> questions;
  std::string file;
  int64_t line = 0;
};

// The entity mentions of a tagged sentence, per type, as (type, text) in order of appearance.
// Reads IOB1 (CoNLL-2003: I-X throughout, B-X only where a mention follows another of the same
// type) and BIO alike: a mention starts at B-X, or at I-X after anything but X. Words are joined
// by one space.
std::vector<std::pair<std::string, std::string>> mentions(const std::vector<std::string>& words,
                                                          const std::vector<std::string>& tags);

// The entity types of tagged records (the X of every B-X / I-X), sorted.
std::vector<std::string> tag_types(const std::vector<data::Record>& records);

// A passage per tagged record (CoNLL sentence) asking every type of `types` (tag type -> the
// natural name asked in questions), in that order; a type absent from the sentence answers [].
// Duplicate mention strings of a type are kept once.
std::vector<Passage> passages_from_tags(const std::vector<data::Record>& records,
                                        const std::vector<std::pair<std::string, std::string>>& types);

// A passage per conversation in the released Pile-NER / UniversalNER format: human "Text: ...",
// gpt "I've read this text.", then (human "What describes T in the text?", gpt "[...]") pairs.
// A conversation of another shape, or an answer that is not a JSON list of strings, is an
// InputError naming file:line (the caller's on_bad_record decides with `skip_bad`).
std::vector<Passage> passages_from_conversations(const std::vector<data::Record>& records, bool skip_bad,
                                                 data::ReadStats* stats);

// Negative types: per passage, about `rate` x (its number of questions) types that it does not
// ask, drawn without replacement with probability proportional to their frequency over `passages`
// (how many passages ask about them with a non-empty answer), each answering []. Appended after
// the passage's own questions. The draw depends only on `seed` and the passages, so every rank
// makes the same ones. Returns the number of negatives added.
int64_t add_negative_types(std::vector<Passage>& passages, double rate, uint64_t seed);

// Per-source sampling weight w for training: every passage floor(w) times, plus a seeded share
// w - floor(w) of them once more, in the passages' order.
std::vector<Passage> apply_weight(const std::vector<Passage>& passages, double weight, uint64_t seed);

// The official training script asks each conversation's questions in a random order (the text
// and its reply stay first; train.py preprocess2, once per example as the lazy dataset caches it).
// Here each passage's questions, in an order drawn from `seed` and the passage's position, so the
// store is the same on any number of ranks.
void shuffle_questions(std::vector<Passage>& passages, uint64_t seed);

// Training: one conversation per passage with all its questions. `prefix` ("" or "Dataset: X")
// goes before "Text:" on its own line.
data::Record training_record(const Passage& p, const std::string& prefix);
// Evaluation: one record per (passage, question), as UniversalNER's evaluation files hold them;
// the last turn is the gold answer. record.label is "{dataset}:{type}".
std::vector<data::Record> evaluation_records(const Passage& p, const std::string& prefix, const std::string& dataset);

// The evaluation format (one question per example, the gold answer in the last gpt turn) back into
// records with label "{dataset}:{type}", the type read from the last question. InputError naming
// file:line for a conversation that does not end with a question and its answer.
std::vector<data::Record> evaluation_records_from_conversations(const std::vector<data::Record>& records,
                                                                const std::string& dataset);

// A JSON list of strings, as answers are written: ["Apple", "Google"] (json.dumps spacing).
std::string answer_json(const std::vector<std::string>& mentions);

}  // namespace kiln::methods::uniner
