// Readers: every source format a recipe names, read into Records that remember the file and line
// they came from, so every later error (a label outside the set, a sequence too long) can name it.
// A malformed record is an InputError "<file>:<line>: <what>: <text, shortened>", or, with
// `on_bad_record: skip`, is skipped and counted in ReadStats.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kiln {
struct DataConfig;
}

namespace kiln::data {

struct Turn {
  std::string from;   // human | gpt (UniversalNER / FastChat names; user/assistant accepted)
  std::string value;
};

struct Record {
  std::string text;                    // classification / plain text
  std::string text_pair;               // optional second text (data.text_pair_field)
  std::string label;                   // classification label, as written in the file
  std::vector<std::string> words;      // CoNLL tokens; a bag's sentences (a method's reader)
  std::vector<std::string> tags;       // CoNLL tags, one per word; the sentences' labels, "" when unknown
  std::vector<Turn> turns;             // conversation
  std::string file;
  int64_t line = 0;                    // 1-based line where the record starts
  std::string where() const { return file + ":" + std::to_string(line); }
};

struct ReadStats {
  int64_t records = 0;
  int64_t skipped = 0;
  std::string first_skip;              // the first skipped record's message, for the log line
};

// How a reader treats malformed input; built from DataConfig by options_from().
struct ReadOptions {
  bool skip_bad = false;               // on_bad_record: skip
  // delimited
  char delimiter = '\t';
  bool quoting = false;                // CSV double-quote rules (RFC 4180), embedded newlines included
  bool header = true;
  std::string text_field = "sentence"; // header name, or 0-based column index when the file has none
  std::string text_pair_field;         // optional second text (question + candidate sentence)
  std::string label_field = "label";   // empty: no label (unlabelled text)
  // conll
  std::string tag_scheme = "bio";      // bio: IOB1 converted to BIO on read | keep
  // text
  std::string document_split = "line"; // line | blank_line
  int64_t skip_lines = 0;              // leading lines to ignore (a `text` header line)
};

ReadOptions options_from(const DataConfig& c);

std::vector<Record> read_conll(const std::string& path, const ReadOptions& o, ReadStats* st = nullptr);
std::vector<Record> read_delimited(const std::string& path, const ReadOptions& o, ReadStats* st = nullptr);
std::vector<Record> read_sst(const std::string& path, const ReadOptions& o, ReadStats* st = nullptr);
std::vector<Record> read_jsonl(const std::string& path, const ReadOptions& o, ReadStats* st = nullptr);
std::vector<Record> read_text(const std::string& path, const ReadOptions& o, ReadStats* st = nullptr);
// A JSON list of {"conversations": [{"from", "value"}...]}, or such objects one after another (JSONL).
std::vector<Record> read_conversations(const std::string& path, const ReadOptions& o, ReadStats* st = nullptr);

// Dispatches on `format` (conll | tsv | csv | sst | jsonl | text | conversation).
std::vector<Record> read_records(const std::string& format, const std::string& path, const ReadOptions& o,
                                 ReadStats* st = nullptr);

// The offset of the first byte of `s` that does not start or continue a well-formed UTF-8 sequence
// (overlong forms, surrogates and code points past U+10FFFF included); npos when it is all valid.
size_t invalid_utf8_at(const std::string& s);
// `s` with each ill-formed sequence replaced by U+FFFD.
std::string replace_invalid_utf8(const std::string& s);
// The code points of UTF-8 text (a byte that starts no sequence stands for itself).
std::vector<uint32_t> code_points(const std::string& s);
// Every text of the records (texts, labels, words, tags, turns) checked: with `replace`, ill-formed
// bytes become U+FFFD (returns how many texts changed); else InputError "<file>:<line>: invalid
// UTF-8 ..." at the word's own line for CoNLL records.
int64_t check_utf8(std::vector<Record>& records, bool replace);

// Splits one line of CSV text into fields; exposed for tests. `line` may hold embedded newlines.
std::vector<std::string> split_delimited(const std::string& line, char delim, bool quoting);

}  // namespace kiln::data
