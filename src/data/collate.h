// Examples of a store into one padded batch. Padding is on the side data.padding_side says and
// always masked; examples longer than max_len are cut as data.truncation says (or refused).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
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
  at::Tensor input_ids;       // [B, T] int64
  at::Tensor attention_mask;  // [B, T] int64: 1 on tokens, 0 on padding
  // classification: [B] int64. token_classification: [B, T], kIgnore on non-first sub-tokens,
  // specials and padding. lm: [B, T] = input_ids with kIgnore where the loss_mask is 0 or padding
  // (not shifted: the task shifts).
  at::Tensor labels;
  at::Tensor loss_mask;       // lm: [B, T] bool; undefined otherwise
  at::Tensor word_ids;        // token_classification: [B, T] int64, kNoWord on specials and padding
  at::Tensor example_index;   // [B] int64: the store index of each row
  at::Tensor lengths;         // [B] int64: tokens before padding
  int64_t num_targets = 0;    // labels that count (tokens, or examples for classification)
  int64_t size() const { return example_index.defined() ? example_index.size(0) : 0; }
};

Batch collate(const Store& store, const std::vector<int64_t>& indices, const CollateOptions& o);

}  // namespace kiln::data
