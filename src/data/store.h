// The tokenized data store: one HDF5 file per split (<store_dir>/train.h5, eval.h5) written by
// `kiln preprocess` and read by training. Token ids of all examples lie in one flat array with
// offsets; per-example and per-token arrays sit beside them, depending on the kind:
//   classification        labels[n]
//   token_classification  token_labels[T] (kIgnore on non-first sub-tokens and specials),
//                         word_ids[T] (kNoWord on specials), word_offsets[n+1] + word_tags[W]
//                         (the gold word-level tags, for span F1 even where words were truncated)
//   lm                    loss_mask[T] (1 where the token is a target)
// Metadata (attribute `meta`, JSON): kind, split, tokenizer checksum, label names, sources with
// their sha256, counts; attribute `recipe`: the resolved recipe. No timestamps are written, so the
// same input gives the same bytes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

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
  std::string kind;                        // classification | token_classification | lm
  std::string split;                       // train | eval
  std::string tokenizer_checksum;
  int32_t bos_id = 1, eos_id = 2, pad_id = 2;
  int64_t max_len = 0;
  int64_t truncated = 0;                   // examples cut to max_len
  std::vector<std::string> label_names;    // label id -> name (tags for token classification)
  std::vector<SourceInfo> sources;
  std::string recipe;                      // the resolved recipe, YAML
};

struct StoreData {
  std::vector<int32_t> input_ids;
  std::vector<int64_t> offsets{0};         // n + 1
  std::vector<int32_t> labels;             // classification
  std::vector<int32_t> token_labels;       // token_classification
  std::vector<int32_t> word_ids;           // token_classification
  std::vector<int64_t> word_offsets{0};    // token_classification, n + 1
  std::vector<int32_t> word_tags;          // token_classification
  std::vector<uint8_t> loss_mask;          // lm
  std::vector<int64_t> source_line;        // per example; 0 for packed text
  StoreMeta meta;

  int64_t size() const { return int64_t(offsets.size()) - 1; }
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

  View<int32_t> ids(int64_t i) const { return slice(d_.input_ids, i); }
  int32_t label(int64_t i) const { return d_.labels.at(size_t(i)); }
  View<int32_t> token_labels(int64_t i) const { return slice(d_.token_labels, i); }
  View<int32_t> word_ids(int64_t i) const { return slice(d_.word_ids, i); }
  View<uint8_t> loss_mask(int64_t i) const { return slice(d_.loss_mask, i); }
  View<int32_t> word_tags(int64_t i) const;
  int64_t source_line(int64_t i) const { return d_.source_line.empty() ? 0 : d_.source_line[size_t(i)]; }
  const StoreData& data() const { return d_; }

 private:
  template <typename T>
  View<T> slice(const std::vector<T>& v, int64_t i) const {
    if (v.empty()) return {};
    auto b = d_.offsets[size_t(i)];
    return {v.data() + b, d_.offsets[size_t(i) + 1] - b};
  }
  std::string path_;
  StoreData d_;
};

// Metadata to/from the JSON kept in the file (exposed for tests and `kiln` verbs that print it).
std::string meta_to_json(const StoreMeta& m);
StoreMeta meta_from_json(const std::string& s, const std::string& where);

}  // namespace kiln::data
