// Examples of a store into one padded batch. Padding is on the side data.padding_side says and
// always masked; examples longer than max_len are cut as data.truncation says (or refused). The
// method's example and token fields come along by name (data/schema.h); ragged fields stay in the
// store. A Batch holds named tensors, so each method puts in it what its loss needs.
#pragma once
#include <ATen/core/Tensor.h>

#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kiln {
struct DataConfig;
}

namespace kiln::data {

class Store;

struct CollateOptions {
  int64_t max_len = 0;                   // 0: no limit
  std::string truncation = "right";      // right | left | error
  std::string padding_side = "right";    // right | left
  int32_t pad_id = 0;
  int64_t pad_to_multiple_of = 1;        // round T up (tensor-core friendly shapes)
};

CollateOptions collate_options(const DataConfig& c, const Store& s);

struct Batch {
  // Always present after collate(): input_ids [B, T] int64, attention_mask [B, T] int64 (1 on
  // tokens), example_index [B] int64 (the store index of each row), lengths [B] int64 (tokens
  // before padding); then one tensor per example / token field of the store, under its name.
  std::map<std::string, at::Tensor> tensors;
  int64_t num_targets = 0;    // what the method's loss counts (tokens, or examples); set by the method

  bool has(const std::string& name) const { return tensors.count(name) > 0; }
  // InternalError naming the missing tensor and those present.
  const at::Tensor& at(const std::string& name) const;
  at::Tensor& operator[](const std::string& name) { return tensors[name]; }
  const at::Tensor& operator[](const std::string& name) const { return at(name); }
  int64_t size() const { return has("example_index") ? at("example_index").size(0) : 0; }
  // Moves every tensor to `device` (no copy when already there).
  void to(c10::Device device);
};

Batch collate(const Store& store, const std::vector<int64_t>& indices, const CollateOptions& o);

}  // namespace kiln::data
