// The tokenized train/eval stores a method trains on, shared by every Task that reads
// `kiln preprocess` stores: opened from data.store_dir, and (re)made there first with the method's
// encoder, by all ranks together through the run's communicator, when missing or stale.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/collate.h"
#include "data/schema.h"
#include "data/store.h"
#include "train/task.h"

namespace kiln {
struct Recipe;
namespace data {
class Tokenizer;
}
namespace parallel {
class Communicator;
}
}  // namespace kiln

namespace kiln::train {

class Stores {
 public:
  Stores() = default;
  // Collective. A store made from another file (or its older content), tokenizer, max_len, label
  // set, example limit, kind or encoder settings is remade: a command-line override never trains
  // on old data.
  static Stores open(const Recipe& r, const data::Encoder& enc, const data::Tokenizer& tok, parallel::Communicator& comm);

  const data::Store& train() const { return train_; }
  const data::Store& eval() const { return eval_; }
  const data::Store& of(Split s) const { return s == Split::train ? train_ : eval_; }
  bool has_eval() const { return has_eval_; }
  const std::string& train_path() const { return train_path_; }
  const std::string& eval_path() const { return eval_path_; }

  int64_t size(Split s) const { return s == Split::eval && !has_eval_ ? 0 : of(s).size(); }
  std::vector<int64_t> lengths(Split s) const { return of(s).lengths(); }
  // The store's example and token fields as named tensors on the CPU (data/collate.h).
  data::Batch collate(Split s, const std::vector<int64_t>& indices) const;

 private:
  data::Store train_, eval_;
  bool has_eval_ = false;
  std::string train_path_, eval_path_;
  data::CollateOptions train_opts_, eval_opts_;
};

// A Task whose examples are the rows of its tokenized stores: the sampler's sizes and lengths and
// the collated batches come from them. The method opens `stores_` in build() (open_stores), and
// adds what its loss needs to each batch in prepare() (e.g. labels, the target count); the batch
// then moves to `device_`.
class StoreTask : public Task {
 public:
  int64_t size(Split s) const override { return stores_.size(s); }
  std::vector<int64_t> lengths(Split s) const override { return stores_.lengths(s); }
  data::Batch collate(Split s, const std::vector<int64_t>& indices) override;

  // Completes a collated batch on the CPU. Default: nothing. Needs no built model (tests call it
  // on batches they collate themselves).
  virtual void prepare(Split s, data::Batch& batch) const {}

 protected:
  // Opens (making them if needed) the stores of this method's encoder.
  void open_stores(const Recipe& r, const data::Tokenizer& tok, parallel::Communicator& comm);

  Stores stores_;
  c10::Device device_{c10::kCPU};
};

}  // namespace kiln::train
