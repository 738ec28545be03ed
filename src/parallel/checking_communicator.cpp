#include "parallel/checking_communicator.h"

#include <ATen/ATen.h>

#include "core/error.h"

namespace kiln::parallel {

struct CheckingCommunicator::Pending : Work {
  CheckingCommunicator* owner = nullptr;
  Op op;
  at::Tensor read;      // the tensor the operation reads (undefined for a barrier)
  at::Tensor snapshot;  // its bytes at start()
  int64_t index = 0;    // 0-based position in this rank's sequence of operations
  bool ran = false;     // guarded by the owner's run_mutex_

  void wait() override { owner->run_through(this); }
  bool done() override {
    owner->run_through(this);
    return true;
  }
};

namespace {

// The bytes of a tensor, flat, for a comparison that NaNs and -0.0 cannot fool.
at::Tensor bytes_of(const at::Tensor& t) { return t.detach().contiguous().reshape({-1}).view(at::kByte); }

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

constexpr int kFields = 8;  // kind, dtype, out numel, in numel, root, reduce, label hash, changed

}  // namespace

CheckingCommunicator::CheckingCommunicator(Communicator& inner) : Communicator(inner.timeout_s()), inner_(&inner) {}

CheckingCommunicator::CheckingCommunicator(std::unique_ptr<Communicator> inner)
    : Communicator(inner->timeout_s()), owned_(std::move(inner)), inner_(owned_.get()) {}

CheckingCommunicator::~CheckingCommunicator() = default;

int64_t CheckingCommunicator::checked() const {
  return checked_;
}

WorkPtr CheckingCommunicator::start(Op op) {
  auto p = std::make_shared<Pending>();
  p->owner = this;
  switch (op.kind) {
    case Kind::AllReduce:
    case Kind::Broadcast: p->read = op.out; break;
    case Kind::AllGather:
    case Kind::ReduceScatter: p->read = op.in; break;
    case Kind::Barrier: break;
  }
  if (p->read.defined()) {
    at::NoGradGuard no_grad;
    p->snapshot = bytes_of(p->read).clone();
  }
  p->op = std::move(op);
  std::lock_guard<std::mutex> lock(queue_mutex_);
  p->index = issued_++;
  queue_.push_back(p);
  return p;
}

void CheckingCommunicator::run_through(Pending* target) {
  std::lock_guard<std::mutex> run(run_mutex_);
  while (!target->ran) {
    std::shared_ptr<Pending> next;
    {
      std::lock_guard<std::mutex> lock(queue_mutex_);
      KILN_CHECK(!queue_.empty(), "checking communicator: waited on an operation that was never queued");
      next = queue_.front();
      queue_.pop_front();
    }
    run_one(*next);
  }
}

void CheckingCommunicator::run_one(Pending& p) {
  p.ran = true;
  const Op& op = p.op;
  at::NoGradGuard no_grad;
  bool changed = p.read.defined() && !at::equal(bytes_of(p.read), p.snapshot);
  const bool has_in = op.kind == Kind::AllGather || op.kind == Kind::ReduceScatter;
  int64_t mine[kFields] = {static_cast<int64_t>(op.kind),
                           op.out.defined() ? static_cast<int64_t>(op.out.scalar_type()) : -1,
                           op.out.defined() ? op.out.numel() : 0,
                           has_in ? op.in.numel() : -1,
                           op.kind == Kind::Broadcast ? op.root : 0,
                           (op.kind == Kind::AllReduce || op.kind == Kind::ReduceScatter) ? static_cast<int64_t>(op.reduce) : 0,
                           static_cast<int64_t>(fnv1a(op.label) & 0x7fffffffffffffffll),
                           changed ? 1 : 0};
  const int n = size();
  at::Tensor all = at::empty({n * kFields}, at::kLong);
  inner_->all_gather(all, at::from_blob(mine, {kFields}, at::kLong).clone(), "checking: signatures");
  const int64_t* sig = all.data_ptr<int64_t>();
  std::vector<int> differ, dirty;
  for (int r = 0; r < n; ++r) {
    for (int f = 0; f < kFields - 1; ++f)
      if (sig[r * kFields + f] != sig[f]) {
        differ.push_back(r);
        break;
      }
    if (sig[r * kFields + kFields - 1]) dirty.push_back(r);
  }
  if (differ.empty() && dirty.empty()) {
    switch (op.kind) {
      case Kind::AllReduce: inner_->all_reduce(op.out, op.reduce, op.label); break;
      case Kind::Broadcast: inner_->broadcast(op.out, op.root, op.label); break;
      case Kind::AllGather: inner_->all_gather(op.out, op.in, op.label); break;
      case Kind::ReduceScatter: inner_->reduce_scatter(op.out, op.in, op.reduce, op.label); break;
      case Kind::Barrier: inner_->barrier(op.label, op.timeout_s); break;
    }
    ++checked_;
    return;
  }
  auto signature = [](int kind, int dtype, int64_t out_n, int64_t in_n, int root, int reduce) {
    if (static_cast<Kind>(kind) == Kind::Barrier) return std::string("barrier");
    std::string s = fmt::format("{} of {} elements", kind_name(static_cast<Kind>(kind)), out_n);
    if (in_n >= 0) s += fmt::format(" (input {})", in_n);
    s += fmt::format(", {}", c10::toString(static_cast<at::ScalarType>(dtype)));
    if (static_cast<Kind>(kind) == Kind::Broadcast) s += fmt::format(", root {}", root);
    if (static_cast<Kind>(kind) == Kind::AllReduce || static_cast<Kind>(kind) == Kind::ReduceScatter)
      s += reduce == 0 ? ", sum" : ", avg";
    return s;
  };
  // Every rank takes this branch in the same exchange. Labels travel only now, when one is needed.
  std::vector<std::string> labels = all_gather_bytes(op.label, *inner_);
  std::string why;
  if (!differ.empty()) {
    why = fmt::format("collective #{} differs between ranks: rank 0 issued {} '{}'", p.index,
                      signature(int(sig[0]), int(sig[1]), sig[2], sig[3], int(sig[4]), int(sig[5])), labels[0]);
    for (int r : differ) {
      const int64_t* s = sig + r * kFields;
      why += fmt::format(", rank {} issued {} '{}'", r, signature(int(s[0]), int(s[1]), s[2], s[3], int(s[4]), int(s[5])),
                         labels[size_t(r)]);
    }
  }
  if (!dirty.empty()) {
    if (!why.empty()) why += "; ";
    why += fmt::format("collective #{} ({} '{}'): its buffer was written after the operation started, on rank(s) {}",
                       p.index, kind_name(op.kind), labels[0], fmt::join(dirty, ","));
  }
  {
    // What was started before the finding is dropped, alike on every rank (all ranks stop at this
    // operation), so that waits on it (destructors unwinding) return; later operations run.
    std::lock_guard<std::mutex> lock(queue_mutex_);
    for (auto& q : queue_) q->ran = true;
    queue_.clear();
  }
  throw CollectiveMisuse(why);
}

}  // namespace kiln::parallel
