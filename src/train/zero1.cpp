#include "train/zero1.h"

#include <map>

#include <cmath>

#include "core/error.h"

namespace kiln::train {

using parallel::Communicator;
using parallel::ReduceOp;
using parallel::WorkPtr;

Zero1AdamW::Zero1AdamW(GradSync& sync, std::vector<bool> decay, AdamWOptions options, std::vector<std::string> names)
    : sync_(sync), decay_(std::move(decay)), names_(std::move(names)), opt_(options) {
  if (names_.empty())
    for (size_t i = 0; i < sync_.params().size(); ++i) names_.push_back(fmt::format("p{}", i));
  KILN_CHECK(sync_.sharded(), "Zero1AdamW needs a GradSync built with dist.zero1 = true");
  KILN_CHECK(decay_.size() == sync_.params().size(), "Zero1AdamW: {} decay flags for {} parameters",
             decay_.size(), sync_.params().size());
  const int rank = sync_.comm().rank(), world = sync_.comm().size();
  for (const auto& b : sync_.buckets()) {
    Shard sh;
    sh.numel = b.padded / world;
    sh.begin = rank * sh.numel;
    const int64_t end = sh.begin + sh.numel;
    for (const auto& s : b.slots) {
      int64_t lo = std::max(sh.begin, s.offset), hi = std::min(end, s.offset + s.numel);
      if (lo >= hi) continue;
      sh.segments.push_back({s.param, lo - s.offset, lo - sh.begin, hi - lo, static_cast<bool>(decay_[s.param])});
    }
    // Moments and the update in float32 for 16-bit parameters, as the replicated AdamW does: in bf16
    // `v *= 0.999` rounds back to v, so the second moment would never decay, and 1 GPU and 8 would
    // train differently.
    auto state_opts = b.flat.options().dtype(b.flat.element_size() < 4 ? at::kFloat : b.flat.scalar_type());
    sh.exp_avg = at::zeros({sh.numel}, state_opts);
    sh.exp_avg_sq = at::zeros({sh.numel}, state_opts);
    shards_.push_back(std::move(sh));
  }
}

int64_t Zero1AdamW::state_bytes() const {
  int64_t n = 0;
  for (const auto& s : shards_) n += 2 * s.numel * s.exp_avg.element_size();
  return n;
}

double Zero1AdamW::step(double lr, double max_grad_norm) {
  at::NoGradGuard no_grad;
  auto& buckets = sync_.buckets();
  const auto& params = sync_.params();
  Communicator& comm = sync_.comm();

  // Global norm: squares summed in double per shard (padding is zero), then over ranks.
  std::vector<at::Tensor> shards;
  for (const auto& b : buckets) shards.push_back(b.shard);
  at::Tensor total = at::full({1}, sum_of_squares(shards), at::TensorOptions().dtype(at::kDouble));
  comm.all_reduce(total, ReduceOp::Sum, "gradient norm");
  const double norm = std::sqrt(total.item<double>());
  const double coef = clip_coefficient(norm, max_grad_norm);
  if (coef < 1)
    for (auto& b : buckets) b.shard.mul_(coef);

  ++step_;
  std::vector<at::Tensor> outgoing(buckets.size());
  std::vector<WorkPtr> works(buckets.size());
  for (size_t bi = 0; bi < buckets.size(); ++bi) {
    auto& b = buckets[bi];
    Shard& sh = shards_[bi];
    // This rank's current parameter values for its shard (the parameters are the master copy,
    // so a checkpoint load into them is picked up), in the moments' dtype. Padding stays zero.
    at::Tensor p = at::zeros({sh.numel}, sh.exp_avg.options());
    for (const auto& seg : sh.segments)
      p.narrow(0, seg.shard_offset, seg.numel).copy_(params[seg.param].detach().reshape(-1).narrow(0, seg.param_offset, seg.numel));
    if (opt_.weight_decay != 0)
      for (const auto& seg : sh.segments)
        if (seg.decay) p.narrow(0, seg.shard_offset, seg.numel).mul_(1 - lr * opt_.weight_decay);
    adamw_update(p, b.shard.to(p.scalar_type()), sh.exp_avg, sh.exp_avg_sq, lr, step_, opt_);
    outgoing[bi] = p.to(b.flat.scalar_type());  // rounded once, as AdamW's copy back into a bf16 weight
    works[bi] = comm.all_gather_async(b.flat, outgoing[bi], fmt::format("parameters, bucket {}/{}", bi + 1, buckets.size()));
  }
  for (size_t bi = 0; bi < buckets.size(); ++bi) {
    auto& b = buckets[bi];
    works[bi]->wait();
    for (const auto& s : b.slots)
      params[s.param].detach().copy_(b.flat.narrow(0, s.offset, s.numel).view(params[s.param].sizes()));
    // The flat buffer goes back to holding gradients: the hooks overwrite every slot, but the
    // padding must read zero again.
    b.flat.narrow(0, b.numel, b.padded - b.numel).zero_();
  }
  return norm;
}

AdamWState Zero1AdamW::gather_state() {
  at::NoGradGuard no_grad;
  Communicator& comm = sync_.comm();
  const auto& params = sync_.params();
  const bool root = comm.rank() == 0;
  AdamWState out;
  out.step = step_;
  if (root) {
    out.exp_avg.resize(params.size());
    out.exp_avg_sq.resize(params.size());
  }
  // One bucket at a time through a transient buffer: the whole state never sits on a device, and
  // only rank 0 keeps (host) copies.
  auto& buckets = sync_.buckets();
  for (size_t bi = 0; bi < buckets.size(); ++bi) {
    const auto& b = buckets[bi];
    for (int which = 0; which < 2; ++which) {
      const at::Tensor& mine = which == 0 ? shards_[bi].exp_avg : shards_[bi].exp_avg_sq;
      at::Tensor full = at::empty({b.padded}, mine.options());
      comm.all_gather(full, mine, fmt::format("optimizer state, bucket {}/{}", bi + 1, buckets.size()));
      if (!root) continue;
      auto& dst = which == 0 ? out.exp_avg : out.exp_avg_sq;
      for (const auto& s : b.slots)
        dst[s.param] = full.narrow(0, s.offset, s.numel).view(params[s.param].sizes()).to(at::kCPU, false, true);
    }
  }
  return out;
}

void Zero1AdamW::load_state(const AdamWState& full) {
  at::NoGradGuard no_grad;
  Communicator& comm = sync_.comm();
  const auto& params = sync_.params();
  const bool root = comm.rank() == 0;
  if (root) {
    KILN_CHECK(full.exp_avg.size() == params.size() && full.exp_avg_sq.size() == params.size(),
               "optimizer state for {} / {} parameters, the model has {}", full.exp_avg.size(),
               full.exp_avg_sq.size(), params.size());
    for (size_t i = 0; i < params.size(); ++i)
      if (full.exp_avg[i].numel() != params[i].numel() || full.exp_avg_sq[i].numel() != params[i].numel())
        throw InputError(fmt::format("optimizer state of parameter {} has {} / {} elements, the parameter has {}", i,
                                     full.exp_avg[i].numel(), full.exp_avg_sq[i].numel(), params[i].numel()));
  }
  at::Tensor step = at::full({1}, full.step, at::TensorOptions().dtype(at::kLong));
  comm.broadcast(step, 0, "optimizer step");
  step_ = step.item<int64_t>();
  auto& buckets = sync_.buckets();
  for (size_t bi = 0; bi < buckets.size(); ++bi) {
    const auto& b = buckets[bi];
    Shard& sh = shards_[bi];
    for (int which = 0; which < 2; ++which) {
      at::Tensor flat = at::zeros({b.padded}, sh.exp_avg.options());
      if (root) {
        const auto& src = which == 0 ? full.exp_avg : full.exp_avg_sq;
        for (const auto& s : b.slots) flat.narrow(0, s.offset, s.numel).copy_(src[s.param].reshape(-1));
      }
      comm.broadcast(flat, 0, fmt::format("optimizer state, bucket {}/{}", bi + 1, buckets.size()));
      (which == 0 ? sh.exp_avg : sh.exp_avg_sq).copy_(flat.narrow(0, sh.begin, sh.numel));
    }
  }
}

TensorList Zero1AdamW::state(bool) {
  AdamWState st = gather_state();  // collective; the full state lands on rank 0, in host memory
  TensorList out;
  for (size_t i = 0; i < st.exp_avg.size(); ++i) {
    out.emplace_back(names_[i] + "|exp_avg", st.exp_avg[i]);
    out.emplace_back(names_[i] + "|exp_avg_sq", st.exp_avg_sq[i]);
  }
  return out;
}

void Zero1AdamW::load_state(const TensorList& state, int64_t steps) {
  AdamWState st;
  st.step = steps;
  // Every rank checks what it was given (all ranks read the checkpoint), so a bad file fails on
  // all of them before the broadcasts below.
  if (sync_.comm().rank() == 0 || !state.empty()) {
    std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
    std::vector<at::IntArrayRef> shapes;
    for (auto& p : sync_.params()) shapes.push_back(p.sizes());
    check_adamw_state(by_name, names_, shapes);
    for (auto& n : names_) {
      st.exp_avg.push_back(by_name.at(n + "|exp_avg").to(at::kFloat));
      st.exp_avg_sq.push_back(by_name.at(n + "|exp_avg_sq").to(at::kFloat));
    }
  }
  load_state(st);
}

}  // namespace kiln::train
