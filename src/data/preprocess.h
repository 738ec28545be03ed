// From source files to stores: read, build the label map, tokenize, write <store_dir>/<split>.h5.
// Multi-rank: every rank reads the (cheap) sources and builds the same label map; rank r tokenizes
// only its contiguous slice of the records (the expensive part) and writes it as a part file; after
// a barrier rank 0 concatenates the parts in rank order and writes the store. Plain text for `lm` is
// packed into max_len windows only after the merge, so the store does not depend on the number of
// ranks. An error on any rank reaches every rank after the barrier (no rank is left waiting).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/readers.h"
#include "data/store.h"

namespace kiln {
struct DataConfig;
struct Recipe;
}  // namespace kiln

namespace kiln::data {

class Tokenizer;

// The kind a DataConfig asks for, `auto` resolved from the format.
std::string resolve_kind(const DataConfig& c);

// Label names in id order: the declared `data.labels`, or the distinct labels of `train` (numbers in
// numeric order, else sorted; for tags `O` first). Any label of `train` or `eval` outside the set
// is an InputError listing them with file:line.
std::vector<std::string> build_label_map(const std::string& kind, const std::vector<std::string>& declared,
                                         const std::vector<Record>& train, const std::vector<Record>& eval);

// Tokenizes records [begin, end) into arrays of the given kind. Text for `lm` stays one example per
// document here (pack_text packs it). Throws InputError naming file:line when truncation is `error`.
StoreData encode_records(const std::string& kind, const std::vector<Record>& records, size_t begin, size_t end,
                         const std::vector<std::string>& label_names, const Tokenizer& tok, const DataConfig& c);

// Concatenates the documents of an lm text store and cuts the stream into max_len windows.
StoreData pack_text(const StoreData& docs, int64_t max_len);

// How the ranks meet; single-process use leaves the defaults.
struct Parallel {
  int rank = 0;
  int size = 1;
  std::function<void()> barrier = [] {};
};

struct SplitSummary {
  std::string split, path;
  int64_t examples = 0, tokens = 0, source_records = 0, skipped = 0, truncated = 0;
  double tokenize_seconds = 0;   // this rank's tokenization of its slice
  double seconds = 0;            // the whole split, read to written, on this rank
};

// Reads, tokenizes and writes the train split (and eval when data.eval is set).
std::vector<SplitSummary> preprocess(const Recipe& r, const Tokenizer& tok, const Parallel& par = {});

}  // namespace kiln::data
