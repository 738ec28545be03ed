#include "parallel/grad_sync.h"

#include <chrono>

#include "core/config.h"
#include "core/error.h"

namespace kiln::parallel {

GradSync::GradSync(std::vector<at::Tensor> params, Communicator& comm, const DistConfig& cfg, ReduceOp op)
    : params_(std::move(params)), comm_(comm), op_(op), overlap_(cfg.overlap), sharded_(cfg.zero1) {
  const int world = comm_.size();
  const int64_t cap_bytes = std::max<int64_t>(1, static_cast<int64_t>(cfg.bucket_mb * 1024 * 1024));
  where_.resize(params_.size());
  filled_.assign(params_.size(), 0);
  Bucket cur;
  int64_t cur_bytes = 0;
  at::TensorOptions cur_opts;
  auto close = [&] {
    if (cur.slots.empty()) return;
    cur.padded = (cur.numel + world - 1) / world * world;
    cur.flat = at::zeros({cur.padded}, cur_opts);
    if (sharded_) cur.shard = at::zeros({cur.padded / world}, cur_opts);
    buckets_.push_back(std::move(cur));
    cur = Bucket();
    cur_bytes = 0;
  };
  for (size_t i = params_.size(); i-- > 0;) {
    const at::Tensor& p = params_[i];
    KILN_CHECK(p.defined() && p.requires_grad(), "GradSync: parameter {} is undefined or does not require grad", i);
    KILN_CHECK(p.is_leaf(), "GradSync: parameter {} is not a leaf tensor", i);
    KILN_CHECK(at::isFloatingType(p.scalar_type()), "GradSync: parameter {} is {}", i, c10::toString(p.scalar_type()));
    auto opts = at::TensorOptions().dtype(p.scalar_type()).device(p.device());
    const int64_t bytes = p.numel() * p.element_size();
    // A bucket holds one dtype on one device; a parameter larger than the cap gets its own.
    if (!cur.slots.empty() && (cur_bytes + bytes > cap_bytes || opts.dtype() != cur_opts.dtype() ||
                               opts.device() != cur_opts.device()))
      close();
    cur_opts = opts;
    where_[i] = {buckets_.size(), cur.slots.size()};
    cur.slots.push_back({i, cur.numel, p.numel()});
    cur.numel += p.numel();
    cur_bytes += bytes;
  }
  close();
  for (size_t i = 0; i < params_.size(); ++i)
    hooks_.push_back(params_[i].register_hook([this, i](at::Tensor g) { on_grad(i, g); }));
}

GradSync::~GradSync() {
  for (size_t i = 0; i < hooks_.size(); ++i) params_[i].remove_hook(hooks_[i]);
  // A step abandoned by an exception may still have buckets in flight that point at our buffers.
  for (auto& b : buckets_)
    if (b.work) b.work->wait();
}

at::Tensor GradSync::slot_view(const Bucket& b, const Slot& s) const {
  return b.flat.narrow(0, s.offset, s.numel).view(params_[s.param].sizes());
}

void GradSync::broadcast_parameters() {
  at::NoGradGuard no_grad;
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = buckets_[bi];
    for (const Slot& s : b.slots) slot_view(b, s).copy_(params_[s.param]);
    comm_.broadcast(b.flat, 0, fmt::format("parameters, bucket {}/{}", bi + 1, buckets_.size()));
    for (const Slot& s : b.slots) params_[s.param].detach().copy_(slot_view(b, s));
    b.flat.zero_();
  }
}

void GradSync::on_grad(size_t i, const at::Tensor& grad) {
  // Autograd may call a leaf's hooks with an undefined gradient (a function that returned none for
  // it): that is no gradient, and must neither fill nor add to the slot.
  if (!sync_ || !grad.defined()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto [bi, si] = where_[i];
  Bucket& b = buckets_[bi];
  at::Tensor view = slot_view(b, b.slots[si]);
  at::NoGradGuard no_grad;
  // The hook runs before autograd adds this gradient to .grad, so .grad still holds exactly the
  // earlier micro-batches of this step (if any): slot = new + accumulated.
  const at::Tensor& acc = params_[i].grad();
  if (filled_[i]) {
    // A parameter reached twice in one backward (a shared weight) adds up in its slot; but once the
    // bucket's collective has started, an add would race it and change what some ranks send.
    KILN_CHECK(bi >= next_launch_,
               "GradSync: a second gradient of parameter {} arrived after its bucket's collective started "
               "(a gradient hook that runs twice for one gradient?)", i);
    view.add_(grad);
  } else {
    view.copy_(grad);
    if (acc.defined()) view.add_(acc);
    filled_[i] = 1;
    ++b.ready;
  }
  if (overlap_) launch_ready();
}

void GradSync::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].ready == buckets_[next_launch_].slots.size())
    launch(next_launch_++);
}

void GradSync::launch(size_t bi) {
  Bucket& b = buckets_[bi];
  std::string label = fmt::format("grad bucket {}/{}", bi + 1, buckets_.size());
  if (sharded_)
    b.work = comm_.reduce_scatter_async(b.shard, b.flat, op_, std::move(label));
  else
    b.work = comm_.all_reduce_async(b.flat, op_, std::move(label));
}

void GradSync::finish() {
  if (!sync_) return;
  at::NoGradGuard no_grad;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Parameters without a gradient in this backward (unused on this rank this time) still take
    // part: their slot holds what .grad holds, or zeros, so every rank reduces the same buckets.
    for (size_t bi = next_launch_; bi < buckets_.size(); ++bi) {
      Bucket& b = buckets_[bi];
      for (const Slot& s : b.slots) {
        if (filled_[s.param]) continue;
        const at::Tensor& g = params_[s.param].grad();
        if (g.defined())
          slot_view(b, s).copy_(g);
        else
          slot_view(b, s).zero_();
        filled_[s.param] = 1;
        ++b.ready;
      }
    }
    launch_ready();
  }
  auto t0 = std::chrono::steady_clock::now();
  for (auto& b : buckets_) {
    b.work->wait();
    b.work.reset();
  }
  last_wait_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (auto& b : buckets_) {
    for (const Slot& s : b.slots) {
      at::Tensor& g = params_[s.param].mutable_grad();
      if (sharded_)
        g.reset();  // the reduced values live in the shards now; a stale local .grad would mislead
      else if (g.defined())
        g.copy_(slot_view(b, s));
      else
        g = slot_view(b, s).clone();
    }
    b.ready = 0;
  }
  std::fill(filled_.begin(), filled_.end(), 0);
  next_launch_ = 0;
}

void broadcast_tensors(Communicator& comm, const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < tensors.size(); ++i) {
    at::Tensor t = tensors[i].detach();
    if (t.is_contiguous()) {
      comm.broadcast(t, 0, fmt::format("tensor {}/{}", i + 1, tensors.size()));
    } else {
      at::Tensor c = t.contiguous();
      comm.broadcast(c, 0, fmt::format("tensor {}/{}", i + 1, tensors.size()));
      t.copy_(c);
    }
  }
}

}  // namespace kiln::parallel
