// A Darumeru-style benchmark harness (the LEP paper's evaluation, llmtf_open's record format): any
// task whose records are {"messages": [{role, content with {placeholders}}], "inputs": {...},
// "outputs": ..., "meta": {...}} is run from a small table that declares how it is scored; no code
// per task. Each record's placeholders are filled from its inputs, the messages are put in the
// model's conversation format, and then:
//   choice    the log-likelihood of each allowed answer after the prompt; the most likely one is the
//             prediction (accuracy, macro F1 over the choices);
//   generate  greedy generation until EOS, a stop string or max_new_tokens (exact match and token F1
//             against any gold answer, as MultiQ is scored; the copy metrics: the share of outputs
//             whose LCS ratio with the gold is >= 0.99, and the mean length ratio, as DaruCopy).
// llmtf_open's own readings are metrics of their own (issue 32, point 5): accuracy_both (a choice
// task asked in both orders of two inputs, `swap`, right only if right in both: PARus),
// em_squad / f1_squad (SQuAD's normalisation: MultiQ), copy_difflib (difflib's matched characters
// over the prediction's length >= 0.99: DaruCopy paragraphs) and length_tokens (the token-count
// ratio: DaruCopy sentences).
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/chat.h"
#include "model/llama.h"

namespace kiln::lep {

using data::ChatFormat;
using data::Message;

// A task of the table.
struct TaskSpec {
  std::string name, file, where;        // where: the table's file:line
  std::string type = "choice";          // choice | generate
  std::vector<std::string> choices;     // choice: the allowed answers
  std::vector<std::string> metrics;     // accuracy f1_macro accuracy_both | em f1 copy length_ratio
                                        // em_squad f1_squad copy_difflib length_tokens
  std::vector<std::string> swap;        // choice with two choices: two input fields asked both ways
  std::vector<std::string> score;       // metrics averaged into the task's score (default: all but length_ratio)
  std::string answer_field;             // outputs that are objects: the field holding the answer text
  std::vector<std::string> stop;        // generate: the output ends before the first of these
  int64_t max_new_tokens = 64;
  int64_t limit = 0;                    // first N records only (0: all)
};

struct BenchTable {
  std::string path;
  ChatFormat chat;                      // the table's `chat:` (a preset name or a map), default fastchat
  std::vector<TaskSpec> tasks;
};
// The table (YAML): `chat:` and `tasks:`, a list of the TaskSpec keys; paths relative to the table,
// ${VAR:-default} expanded. InputError naming file:line and key.
BenchTable read_table(const std::string& path);

struct BenchRecord {
  std::vector<Message> messages;        // placeholders filled
  std::vector<std::string> golds;       // one or more acceptable answers
  std::string where;                    // file:line
  nlohmann::json meta;
  std::vector<Message> swapped;         // task.swap: the messages with the two inputs exchanged
  std::string swapped_gold;             // and the other choice as the gold answer
};
// The task's records; InputError naming file:line for a record without messages, an unknown role,
// outputs of an undeclared shape, or (choice) a gold answer that is not one of the choices.
std::vector<BenchRecord> read_records(const TaskSpec& task);

// Fills `{name}` for every name in `inputs` (strings as they are, other values as JSON); any other
// brace is text.
std::string fill(const std::string& tmpl, const nlohmann::json& inputs);

// Metrics (exposed for tests).
std::string normalize_answer(const std::string& s);  // lower case, punctuation dropped, spaces collapsed
double token_f1(const std::string& pred, const std::string& gold);  // on normalized whitespace tokens
double lcs_ratio(const std::string& a, const std::string& b);       // 2 LCS / (|a| + |b|), code points
double macro_f1(const std::vector<std::string>& pred, const std::vector<std::string>& gold,
                const std::vector<std::string>& classes);
// transformers' squad_metrics: lower case, ASCII punctuation dropped, the words a / an / the
// dropped, white space collapsed; exact match and token F1 on that (both empty: 1).
std::string squad_normalize(const std::string& s);
double squad_f1(const std::string& pred, const std::string& gold);
// Python's difflib.SequenceMatcher(None, a, b, autojunk=False): the characters (code points) of
// its matching blocks, summed. Not an LCS: the blocks are the longest match, then recursively the
// longest on each side of it.
int64_t difflib_matched(const std::string& a, const std::string& b);
// The token-length score of a copy: min(p / s, s / p) for p predicted tokens and s gold tokens
// (s capped at max_new_tokens); 0 when nothing was predicted.
double length_tokens(int64_t predicted, int64_t gold, int64_t max_new_tokens);

struct TaskResult {
  std::string name;
  int64_t records = 0, truncated = 0;
  std::map<std::string, double> metrics;
  double score = 0;
  std::vector<nlohmann::json> predictions;  // one per record: id, prediction, gold, per-choice log-likelihoods
};

struct BenchOptions {
  int64_t max_len = 0;  // prompt + answer tokens; 0: the model's max_position_embeddings
};
// Runs one task on `model` (eval mode, no gradients). Prompts longer than max_len lose tokens after
// the prefix's first token (BOS), counted as truncated.
TaskResult run_task(model::Llama& model, const data::Tokenizer& tok, const std::map<std::string, int32_t>& specials,
                    const ChatFormat& chat, const TaskSpec& task, const BenchOptions& opts);

}  // namespace kiln::lep
