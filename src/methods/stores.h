// The tokenized train/eval stores a method trains on, shared by every Task that reads
// `kiln preprocess` stores: opened from data.store_dir, and (re)made there first, by all ranks
// together, when missing or stale; batches collated and moved to the rank's device.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/collate.h"
#include "data/store.h"
#include "methods/task.h"

namespace kiln {
struct Recipe;
namespace data {
class Tokenizer;
}
namespace dist {
class World;
}
}  // namespace kiln

namespace kiln::methods {

class Stores {
 public:
  Stores() = default;
  // Collective. A store made from another file (or its older content), tokenizer, max_len, label
  // set or example limit is remade: a command-line override never trains on old data.
  static Stores open(const Recipe& r, const data::Tokenizer& tok, dist::World& world);

  const data::Store& train() const { return train_; }
  const data::Store& eval() const { return eval_; }
  const data::Store& of(Split s) const { return s == Split::train ? train_ : eval_; }
  bool has_eval() const { return has_eval_; }
  const std::string& train_path() const { return train_path_; }
  const std::string& eval_path() const { return eval_path_; }

  int64_t size(Split s) const { return s == Split::eval && !has_eval_ ? 0 : of(s).size(); }
  std::vector<int64_t> lengths(Split s) const { return of(s).lengths(); }
  data::Batch collate(Split s, const std::vector<int64_t>& indices) const;

 private:
  data::Store train_, eval_;
  bool has_eval_ = false;
  std::string train_path_, eval_path_;
  data::CollateOptions train_opts_, eval_opts_;
  c10::Device device_{c10::kCPU};
};

// A Task whose examples are the rows of its tokenized stores: the sampler's sizes and lengths and
// the collated batches come from them; the method opens `stores_` in build().
class StoreTask : public Task {
 public:
  int64_t size(Split s) const override { return stores_.size(s); }
  std::vector<int64_t> lengths(Split s) const override { return stores_.lengths(s); }
  data::Batch collate(Split s, const std::vector<int64_t>& indices) override { return stores_.collate(s, indices); }

 protected:
  Stores stores_;
};

}  // namespace kiln::methods
