// safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then raw bytes.
// The reader maps the file, so loading a model copies each tensor once, from the page cache into
// its parameter (on any device, converting dtype on the way), and never holds a second copy.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace kiln::model {

class SafeTensorsFile {
 public:
  struct Entry {
    std::string dtype;             // F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;   // byte offsets into the data section
  };

  // Maps `path` and parses its header. Throws InputError naming the file on anything malformed.
  explicit SafeTensorsFile(const std::string& path);
  ~SafeTensorsFile();
  SafeTensorsFile(const SafeTensorsFile&) = delete;
  SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  const Entry& entry(const std::string& name) const;  // InputError naming tensor and file if absent

  // A CPU tensor over the mapped bytes, valid while this object lives. Read-only: never write to it.
  at::Tensor view(const std::string& name) const;
  // An owning CPU copy.
  at::Tensor load(const std::string& name) const;
  // Copies the tensor into `dst` (any device and floating dtype). A shape mismatch is an InputError
  // naming the tensor, both shapes and the file; `expected_by` says what expects dst's shape.
  void copy_into(const std::string& name, at::Tensor dst, const std::string& expected_by = "the model") const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensorList = std::vector<std::pair<std::string, at::Tensor>>;

// Writes tensors (any device; made contiguous CPU one at a time) in the given order, with optional
// string metadata (HF writes {"format": "pt"}). Written to a temporary name and renamed, so a
// reader never sees half a file. Throws InputError if the directory is not writable.
void write_safetensors(const std::string& path, const NamedTensorList& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

std::string safetensors_dtype(const at::Tensor& t);  // "F32", ...; InternalError for unsupported
std::string shape_str(at::IntArrayRef shape);         // "[64, 512]"

}  // namespace kiln::model
