// GGUF (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), the file format of llama.cpp
// and Ollama: a header, typed key/value metadata, a tensor directory, then aligned tensor data.
// This layer knows the container only: values, tensor types and their byte sizes, raw bytes. What
// the keys mean for a model (model/gguf_model.h) or a tokenizer (data/gguf_vocab.h) lives there.
// The reader maps the file, so a tensor's bytes are read from the page cache when used.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace kiln::gguf {

enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  U64 = 10, I64 = 11, F64 = 12,
};

// One metadata value. Scalars use one of i/f/b/s; arrays keep their element type in `elem` and
// their items in `strings`, `floats` (F32/F64) or `ints` (integers and booleans).
struct Value {
  ValueType type = ValueType::U32, elem = ValueType::U32;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string s;
  std::vector<std::string> strings;
  std::vector<double> floats;
  std::vector<int64_t> ints;

  static Value str(std::string v);
  static Value u32(uint32_t v);
  static Value i32(int32_t v);
  static Value f32(float v);
  static Value boolean(bool v);
  static Value string_array(std::vector<std::string> v);
  static Value f32_array(std::vector<double> v);
  static Value i32_array(std::vector<int64_t> v);
};

// ggml's tensor types (ggml.h `enum ggml_type`); the numbers are the file's.
enum TensorType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10, Q3_K = 11,
  Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, BF16 = 30,
};

// Name ("Q4_K"), block size in elements and bytes per block of a type the format defines; `known`
// false for a number no ggml version used.
struct TypeInfo {
  bool known = false;
  std::string name;
  uint64_t block = 1, bytes = 0;
};
TypeInfo type_info(uint32_t type);
std::string type_name(uint32_t type);  // "Q4_K", or "type 77" for an unknown number
// The type named `name` (case-insensitive, e.g. "q8_0"); -1 if none.
int64_t type_from_name(const std::string& name);

struct Tensor {
  std::string name;
  uint32_t type = F32;
  std::vector<uint64_t> ne;  // ggml order: ne[0] is the contiguous (innermost) dimension
  uint64_t offset = 0;       // from the start of the data section
  uint64_t nbytes = 0;
  uint64_t elements() const;
};

class File {
 public:
  // Maps `path` and parses header, metadata and tensor directory. Anything malformed (magic,
  // version, a size past the end, an unknown value type) is an InputError naming the file.
  explicit File(const std::string& path);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  const std::map<std::string, Value>& metadata() const { return kv_; }
  const std::vector<Tensor>& tensors() const { return tensors_; }
  const Tensor* find_tensor(const std::string& name) const;  // nullptr if absent

  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  const Value* find(const std::string& key) const;
  // Typed reads. A missing key or one of another type is an InputError naming file and key.
  std::string str(const std::string& key) const;
  int64_t integer(const std::string& key) const;
  double number(const std::string& key) const;  // any integer or float scalar
  bool flag(const std::string& key) const;
  const std::vector<std::string>& strings(const std::string& key) const;
  const std::vector<int64_t>& ints(const std::string& key) const;
  const std::vector<double>& floats(const std::string& key) const;
  // The same with a default where the key is absent (a present key of the wrong type still throws).
  std::string str_or(const std::string& key, const std::string& def) const;
  int64_t integer_or(const std::string& key, int64_t def) const;
  double number_or(const std::string& key, double def) const;
  bool flag_or(const std::string& key, bool def) const;

  // The tensor's bytes in the mapping, valid while this object lives.
  const uint8_t* data(const Tensor& t) const;

 private:
  std::string path_;
  uint32_t version_ = 0;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;
  std::map<std::string, Value> kv_;
  std::vector<Tensor> tensors_;
};

// Writes a GGUF version 3 file. Metadata is written in the order it was set; tensors in the order
// added, each produced by its callback only while writing (one tensor in memory at a time). The
// file appears under its name only when complete (written to a temporary name, then renamed).
class Writer {
 public:
  void set(const std::string& key, Value v);
  // `produce` must return exactly the bytes `type` and `ne` imply (checked).
  void add_tensor(const std::string& name, uint32_t type, std::vector<uint64_t> ne,
                  std::function<std::vector<uint8_t>()> produce);
  void write(const std::string& path, uint32_t alignment = 32) const;

 private:
  std::vector<std::pair<std::string, Value>> kv_;
  struct Pending {
    Tensor t;
    std::function<std::vector<uint8_t>()> produce;
  };
  std::vector<Pending> tensors_;
};

}  // namespace kiln::gguf
