// From source files to stores: read, build the label map, tokenize, write <store_dir>/<split>.h5.
// Multi-rank: every rank reads the (cheap) sources and builds the same label map; rank r tokenizes
// only its contiguous slice of the records (the expensive part) and writes it as a part file; after
// a barrier rank 0 concatenates the parts in rank order, lets the encoder finish them (e.g. pack
// documents into max_len windows) and writes the store, so it does not depend on the number of
// ranks. What is stored per example is the method's (data/schema.h). An error on any rank reaches every rank after the barrier (no rank is left waiting).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/readers.h"
#include "data/schema.h"
#include "data/store.h"

namespace kiln {
struct DataConfig;
struct Recipe;
}  // namespace kiln

namespace kiln::data {

class Tokenizer;

// Encodes records [begin, end) with the method's encoder and cuts each example to data.max_len as
// data.truncation says (unless the encoder packs instead); `label_names` from Encoder::labels.
// Throws InputError naming file:line when truncation is `error`.
StoreData encode_records(const Encoder& enc, const std::vector<Record>& records, size_t begin, size_t end,
                         const std::vector<std::string>& label_names, const Tokenizer& tok, const DataConfig& c);

// Concatenates the documents of a store and cuts the stream into max_len windows; token fields go
// along with the ids (a store to be packed has no example or ragged fields).
void pack_documents(StoreData& d, int64_t max_len);

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

// Reads, tokenizes and writes the train split (and eval when data.eval is set) with the method's
// encoder.
std::vector<SplitSummary> preprocess(const Recipe& r, const Encoder& enc, const Tokenizer& tok,
                                     const Parallel& par = {});

}  // namespace kiln::data
