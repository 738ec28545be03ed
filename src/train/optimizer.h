// The optimizer seen by the trainer: one step at a given learning rate, and its full state as named
// tensors for checkpoints (a sharded optimizer gathers its shards into the same form, so a
// checkpoint does not depend on the number of ranks or on dist.zero1).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "train/checkpoint.h"

namespace kiln::train {

struct ParamGroupOptions {
  double weight_decay = 0;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Applies one update from the parameters' .grad() (already synchronised across ranks).
  virtual void step(double lr) = 0;
  virtual int64_t steps() const = 0;
  // Full state, keyed "<param name>/<state name>" with '/' replaced by '|' (HDF5 names cannot hold '/').
  virtual TensorList state() = 0;
  virtual void load_state(const TensorList& state, int64_t steps) = 0;
};

// AdamW with decoupled weight decay, the arithmetic of torch.optim.AdamW (single-tensor path):
//   p *= 1 - lr*wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
// Parameters named in `no_decay` get weight decay 0 (norms, biases).
class AdamW : public Optimizer {
 public:
  struct Param {
    std::string name;
    at::Tensor p;
    bool decay = true;
  };
  AdamW(std::vector<Param> params, double beta1, double beta2, double eps, double weight_decay);
  void step(double lr) override;
  int64_t steps() const override { return t_; }
  TensorList state() override;
  void load_state(const TensorList& state, int64_t steps) override;

 private:
  std::vector<Param> params_;
  std::vector<at::Tensor> m_, v_;
  double b1_, b2_, eps_, wd_;
  int64_t t_ = 0;
};

}  // namespace kiln::train
