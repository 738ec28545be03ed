// What a method declares about its data: the named, typed arrays its store holds beside the token
// ids (the schema), and how one source record becomes one example (the Encoder). The engine owns the
// rest: reading files, tokenizing in parallel, truncation, part files and merging, the HDF5 file
// with its metadata and staleness checks, and padding stored arrays into batches (collate.h).
//
// Every store holds `input_ids` (int32, all examples in one flat array), `offsets` (n + 1) and
// `source_line` (n). A method's fields come in three shapes:
//   example   one value per example                          -> a [B] tensor in a batch
//   token     one value per token, parallel to input_ids     -> a [B, T] tensor, padded with `pad`
//             (truncated and padded with the ids)
//   ragged    any number of values per example, with its own -> not batched: the method reads
//             offsets array (`offsets`, default <name>_offsets)   them from the store (Store::get)
// int32 / int64 values become int64 tensors in a batch, uint8 values bool (masks), float32 float.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "data/readers.h"

namespace kiln {
struct DataConfig;
}

namespace kiln::data {

class Tokenizer;
struct StoreData;

enum class DType : uint8_t { i32, i64, u8, f32 };
enum class Per : uint8_t { example, token, ragged };

const char* dtype_name(DType t);
const char* per_name(Per p);

struct Field {
  Field() = default;
  Field(std::string n, DType t, Per p, double pad_value = 0, std::string offsets_name = "")
      : name(std::move(n)), dtype(t), per(p), pad(pad_value), offsets(std::move(offsets_name)) {}
  std::string name;
  DType dtype = DType::i32;
  Per per = Per::example;
  double pad = 0;          // token fields: the value of padding positions in a batch
  std::string offsets;     // ragged fields: the offsets dataset (default <name>_offsets)
  std::string offsets_name() const { return offsets.empty() ? name + "_offsets" : offsets; }
};

// The values of one field: a flat array of its type.
using Values = std::variant<std::vector<int32_t>, std::vector<int64_t>, std::vector<uint8_t>, std::vector<float>>;
Values empty_values(DType t);
DType dtype_of(const Values& v);
size_t values_size(const Values& v);

// One encoded example, before truncation: its tokens and the method's values for it.
struct Example {
  std::vector<int32_t> ids;
  std::map<std::string, Values> values;
  template <typename T>
  std::vector<T>& put(const std::string& name) {
    auto it = values.find(name);
    if (it == values.end()) it = values.emplace(name, std::vector<T>{}).first;
    return std::get<std::vector<T>>(it->second);
  }
};

// What encode() gets besides the record.
struct EncodeContext {
  const Tokenizer& tok;
  const DataConfig& data;
  const std::vector<std::string>& label_names;  // from Encoder::labels()
  int32_t label_id(const std::string& label) const;  // KILN_CHECK that it is in label_names
};

class Encoder {
 public:
  virtual ~Encoder() = default;
  // The store's kind (its metadata and staleness check name it): e.g. "classification".
  virtual std::string kind() const = 0;
  virtual std::vector<Field> fields() const = 0;
  // Anything else that changes the stored bytes (a prompt template, a setting): a store made with
  // other settings is remade. Empty: none.
  virtual std::string settings() const { return ""; }
  // Checks the recipe's data section before any file is read (format and kind combinations):
  // InputError naming the key.
  virtual void check(const DataConfig& c) const {}
  // The files split `split` (train | eval) is made from, in order: read() is called on each and
  // the records are concatenated; the store records each file's checksum, and a change to any of
  // them remakes it. Default: data.train, or data.eval (none when it is empty: no eval split). A
  // method that mixes several sources in one store (per-source settings under `task:`) lists them.
  virtual std::vector<std::string> sources(const DataConfig& c, const std::string& split) const;
  // How the records of `split` (train | eval) are read from `path`; the default reads data.format
  // with the reader options of data.*. stats->records must count the records returned.
  virtual std::vector<Record> read(const DataConfig& c, const std::string& split, const std::string& path,
                                   ReadStats* stats) const;
  // Label names in id order, from every split's records (identical on every rank). Default: none.
  virtual std::vector<std::string> labels(const DataConfig& c, const std::vector<Record>& train,
                                          const std::vector<Record>& eval) const {
    return {};
  }
  // One record into one example: its ids and one entry per field (example fields: one value;
  // token fields: one per id; ragged: any number).
  virtual void encode(const Record& rec, const EncodeContext& ctx, Example& out) const = 0;
  // false: examples are not cut to data.max_len here (e.g. documents packed into windows by finish()).
  virtual bool truncates() const { return true; }
  // The merged store, before it is written (e.g. documents packed into max_len windows).
  virtual void finish(StoreData& all, const DataConfig& c) const {}
};

// Label names in id order for labelled records: `declared` (data.labels) if given, else the distinct
// labels of `train` (numbers in numeric order, else sorted; with `tags`, CoNLL tags of r.tags, `O`
// first then by entity type). A label of `train` (when declared) or `eval` outside the set is an
// InputError listing them with file:line.
std::vector<std::string> build_label_map(bool tags, const std::vector<std::string>& declared,
                                         const std::vector<Record>& train, const std::vector<Record>& eval);

}  // namespace kiln::data
