// The optimizer seen by the trainer: one step (clipping included) at a given learning rate, and its
// full state as named tensors for checkpoints. Two implementations with one arithmetic:
//   AdamW       every rank holds the whole state (replicated);
//   Zero1AdamW  (train/zero1.h) the state is sharded across ranks and gathered into the same
//               layout for checkpoints, so a checkpoint does not depend on the number of ranks or
//               on dist.zero1.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "train/checkpoint.h"

namespace kiln::train {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Clips the gradients (already synchronised across ranks) to max_grad_norm by their global norm
  // (0: no clipping), applies one update, and returns the norm before clipping. Collective for a
  // sharded optimizer.
  virtual double step(double lr, double max_grad_norm) = 0;
  virtual int64_t steps() const = 0;
  // Full state, keyed "<param name>|<state name>" ('/' cannot appear in HDF5 names), as host copies
  // the caller owns, for the rank that writes it (keep = true; the others get an empty list and copy
  // nothing). Collective for a sharded optimizer, whose state lands on rank 0 (keep is ignored).
  virtual TensorList state(bool keep) = 0;
  // Collective for a sharded optimizer: rank 0's `state` is used. InputError naming a missing or
  // misshapen tensor.
  virtual void load_state(const TensorList& state, int64_t steps) = 0;
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
};

// torch.nn.utils.clip_grad_norm_'s coefficient: gradients are scaled by it when it is below 1.
double clip_coefficient(double norm, double max_grad_norm);
// Sum of squares of the tensors, accumulated in double.
double sum_of_squares(const std::vector<at::Tensor>& tensors);

// The AdamW update after decoupled weight decay (the caller applies p *= 1 - lr*wd to the decayed
// elements first), torch.optim.AdamW's single-tensor arithmetic, operation for operation:
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
// t is the 1-based step. In place on p, m, v.
void adamw_update(at::Tensor& p, const at::Tensor& g, at::Tensor& m, at::Tensor& v, double lr, int64_t t,
                  const AdamWOptions& o);

// Replicated AdamW. Parameters with decay = false (norms, biases) get no weight decay.
class AdamW : public Optimizer {
 public:
  struct Param {
    std::string name;
    at::Tensor p;
    bool decay = true;
  };
  AdamW(std::vector<Param> params, const AdamWOptions& o);
  double step(double lr, double max_grad_norm) override;
  int64_t steps() const override { return t_; }
  TensorList state(bool keep) override;
  void load_state(const TensorList& state, int64_t steps) override;

 private:
  std::vector<Param> params_;
  std::vector<at::Tensor> m_, v_;
  AdamWOptions o_;
  int64_t t_ = 0;
};

// State tensors named "<name>|exp_avg" and "<name>|exp_avg_sq" for each parameter name, in order;
// InputError naming the first one missing or of another shape than `shapes[i]`.
void check_adamw_state(const std::map<std::string, at::Tensor>& by_name, const std::vector<std::string>& names,
                       const std::vector<at::IntArrayRef>& shapes);

}  // namespace kiln::train
