// The tokenized data store: one HDF5 file per split (<store_dir>/train.h5, eval.h5) written by
// `kiln preprocess` (or by a run, when missing or stale) and read by training. Token ids of all
// examples lie in one flat array with offsets; the method's fields (data/schema.h) sit beside them as
// 1-D datasets of their own names. LS-LLaMA's classification stores hold `labels`; its token
// classification stores `token_labels`, `word_ids` and the ragged `word_tags` with `word_offsets`;
// lm stores `loss_mask`.
// Metadata (attribute `meta`, JSON): kind, split, tokenizer checksum, label names, sources with
// their sha256, counts, the schema and the encoder's settings; attribute `recipe`: the resolved
// recipe. No timestamps are written, so the same input gives the same bytes.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/schema.h"

namespace kiln::data {

class Tokenizer;

template <typename T>
struct View {  // a read-only slice of a store array
  const T* ptr = nullptr;
  int64_t n = 0;
  const T* begin() const { return ptr; }
  const T* end() const { return ptr + n; }
  int64_t size() const { return n; }
  const T& operator[](int64_t i) const { return ptr[i]; }
  std::vector<T> vec() const { return std::vector<T>(begin(), end()); }
};

struct SourceInfo {
  std::string path, sha256;
  int64_t records = 0, skipped = 0;
};

struct StoreMeta {
  int format_version = 1;
  std::string kind;                        // the method's store kind (Encoder::kind)
  std::string split;                       // train | eval
  std::string tokenizer_checksum;
  int32_t bos_id = 1, eos_id = 2, pad_id = 2;
  int64_t max_len = 0;
  std::string truncation;                  // data.truncation it was made with ("" in older stores)
  int64_t truncated = 0;                   // examples cut to max_len
  int64_t encoded = -1;                    // records encoded, before Encoder::finish (packing); -1: unknown
  std::vector<std::string> label_names;    // label id -> name (tags for token classification)
  std::vector<SourceInfo> sources;
  std::vector<Field> fields;               // the method's schema
  std::string settings;                    // Encoder::settings() at the time it was made
  std::string recipe;                      // the resolved recipe, YAML
};

// A field's values for all examples; ragged fields carry their offsets (n + 1).
struct Column {
  Field field;
  Values values;
  std::vector<int64_t> offsets{0};
};

struct StoreData {
  std::vector<int32_t> input_ids;
  std::vector<int64_t> offsets{0};         // n + 1
  std::vector<int64_t> source_line;        // per example; 0 for packed text
  std::vector<Column> columns;             // in schema order
  StoreMeta meta;

  StoreData() = default;
  explicit StoreData(const std::vector<Field>& fields);  // empty columns of these fields
  int64_t size() const { return int64_t(offsets.size()) - 1; }
  Column& column(const std::string& name);
  const Column& column(const std::string& name) const;
  // Checks an encoder's example against the schema: every field present, of its type, one value
  // for an example field, one per id for a token field. InternalError naming `where` and the field.
  void check(const Example& ex, const std::string& where) const;
  // Appends one example that check() accepted.
  void add(const Example& ex, int64_t source_line);
  void append(const StoreData& part);      // arrays only; meta untouched
};

// Writes atomically: to `path`.tmp, then renamed.
void write_store(const std::string& path, const StoreData& d);

class Store {
 public:
  // Opens read-only and loads the arrays. Throws InputError naming the file if it is not a store.
  explicit Store(const std::string& path);
  Store() = default;

  // Refuses a store made with another tokenizer than the model's: InputError naming both checksums.
  void check_tokenizer(const Tokenizer& tok) const;
  void check_tokenizer(const std::string& checksum, const std::string& tokenizer_path) const;

  const std::string& path() const { return path_; }
  const StoreMeta& meta() const { return d_.meta; }
  const std::string& kind() const { return d_.meta.kind; }
  const std::vector<std::string>& label_names() const { return d_.meta.label_names; }
  int64_t num_labels() const { return int64_t(d_.meta.label_names.size()); }
  int64_t size() const { return d_.size(); }
  int64_t num_tokens() const { return int64_t(d_.input_ids.size()); }
  int64_t length(int64_t i) const { return d_.offsets[size_t(i) + 1] - d_.offsets[size_t(i)]; }
  std::vector<int64_t> lengths() const;

  View<int32_t> ids(int64_t i) const { return {d_.input_ids.data() + d_.offsets[size_t(i)], length(i)}; }
  bool has(const std::string& field) const;
  const Field& field(const std::string& name) const { return d_.column(name).field; }
  // Example i's values of a field: one for example fields, one per token for token fields, its
  // slice for ragged ones. InternalError when the field is missing or T is not its type.
  template <typename T>
  View<T> get(const std::string& name, int64_t i) const;
  template <typename T>
  T value(const std::string& name, int64_t i) const { return get<T>(name, i)[0]; }
  int64_t source_line(int64_t i) const { return d_.source_line.empty() ? 0 : d_.source_line[size_t(i)]; }
  const StoreData& data() const { return d_; }

 private:
  std::string path_;
  StoreData d_;
};

// Metadata to/from the JSON kept in the file (exposed for tests and `kiln` verbs that print it).
std::string meta_to_json(const StoreMeta& m);
StoreMeta meta_from_json(const std::string& s, const std::string& where);

}  // namespace kiln::data
