#include "parallel/communicator.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "parallel/checking_communicator.h"
#include "parallel/mpi_communicator.h"
#include "parallel/world.h"
#ifdef KILN_WITH_CUDA
#include "parallel/nccl_communicator.h"
#endif

namespace kiln::parallel {

const char* Communicator::kind_name(Kind k) {
  switch (k) {
    case Kind::AllReduce: return "all_reduce";
    case Kind::Broadcast: return "broadcast";
    case Kind::AllGather: return "all_gather";
    case Kind::ReduceScatter: return "reduce_scatter";
    case Kind::Barrier: return "barrier";
  }
  return "?";
}

void Communicator::check_op(const Op& op) const {
  const char* name = kind_name(op.kind);
  if (op.kind == Kind::Barrier) return;
  KILN_CHECK(op.out.defined(), "{}: output tensor is undefined", name);
  if (op.kind == Kind::AllGather || op.kind == Kind::ReduceScatter) {
    KILN_CHECK(op.in.defined(), "{}: input tensor is undefined", name);
    KILN_CHECK(op.in.scalar_type() == op.out.scalar_type() && op.in.device() == op.out.device(),
               "{}: input {} on {} but output {} on {}", name, c10::toString(op.in.scalar_type()),
               op.in.device().str(), c10::toString(op.out.scalar_type()), op.out.device().str());
    int64_t small = op.kind == Kind::AllGather ? op.in.numel() : op.out.numel();
    int64_t big = op.kind == Kind::AllGather ? op.out.numel() : op.in.numel();
    KILN_CHECK(big == small * size(), "{}: {} elements is not {} ranks x {}", name, big, size(), small);
  }
  if (op.kind == Kind::Broadcast) KILN_CHECK(op.root >= 0 && op.root < size(), "broadcast: root {} of {}", op.root, size());
  if ((op.kind == Kind::AllReduce || op.kind == Kind::ReduceScatter) && op.reduce == ReduceOp::Avg)
    KILN_CHECK(at::isFloatingType(op.out.scalar_type()), "{}: Avg needs a floating tensor, not {}", name,
               c10::toString(op.out.scalar_type()));
}

WorkPtr Communicator::all_reduce_async(at::Tensor t, ReduceOp op, std::string label) {
  Op o;
  o.kind = Kind::AllReduce;
  o.out = std::move(t);
  o.reduce = op;
  o.label = std::move(label);
  check_op(o);
  return start(std::move(o));
}

WorkPtr Communicator::broadcast_async(at::Tensor t, int root, std::string label) {
  Op o;
  o.kind = Kind::Broadcast;
  o.out = std::move(t);
  o.root = root;
  o.label = std::move(label);
  check_op(o);
  return start(std::move(o));
}

WorkPtr Communicator::all_gather_async(at::Tensor out, at::Tensor in, std::string label) {
  Op o;
  o.kind = Kind::AllGather;
  o.out = std::move(out);
  o.in = std::move(in);
  o.label = std::move(label);
  check_op(o);
  return start(std::move(o));
}

WorkPtr Communicator::reduce_scatter_async(at::Tensor out, at::Tensor in, ReduceOp op, std::string label) {
  Op o;
  o.kind = Kind::ReduceScatter;
  o.out = std::move(out);
  o.in = std::move(in);
  o.reduce = op;
  o.label = std::move(label);
  check_op(o);
  return start(std::move(o));
}

WorkPtr Communicator::barrier_async(std::string label, double timeout_s) {
  Op o;
  o.kind = Kind::Barrier;
  o.label = std::move(label);
  o.timeout_s = timeout_s;
  return start(std::move(o));
}

void Communicator::set_context(int64_t step, std::string what) {
  std::lock_guard<std::mutex> lock(context_mutex_);
  step_ = step;
  what_ = std::move(what);
}

std::string Communicator::context() const {
  std::lock_guard<std::mutex> lock(context_mutex_);
  if (step_ < 0 && what_.empty()) return "before the first step";
  if (step_ < 0) return what_;
  return what_.empty() ? fmt::format("step {}", step_) : fmt::format("step {} ({})", step_, what_);
}

std::string Communicator::describe(const Op& op) const {
  const at::Tensor& t = op.kind == Kind::ReduceScatter ? op.in : op.out;
  std::string size_note =
      t.defined() ? fmt::format(", {:.3g} MB", static_cast<double>(t.numel() * t.element_size()) / 1e6) : "";
  std::string label = op.label.empty() ? "" : fmt::format(" of {}", op.label);
  return fmt::format("{}{} ({}{}) at {}", kind_name(op.kind), label, backend(), size_note, context());
}

void Communicator::fail(const Op& op, const std::string& why) const {
  // One line, straight to stderr: logging may be configured to drop this rank's output.
  std::fprintf(stderr, "kiln: rank %d of %d: %s %s; ending the job\n", rank(), size(), describe(op).c_str(), why.c_str());
  std::fflush(stderr);
  World::get().abort(kExitInternal);
}

void Communicator::still_waiting(const Op& op, double waited_s) const {
  std::fprintf(stderr, "kiln: rank %d of %d: %s: still waiting after %.0f s for every rank to join; gives up at %g s (dist.timeout_s)\n",
               rank(), size(), describe(op).c_str(), waited_s, timeout_s(op));
  std::fflush(stderr);
}

std::unique_ptr<Communicator> make_communicator(const DistConfig& cfg, World& world) {
  const bool cuda = world.device().is_cuda();
#ifdef KILN_WITH_CUDA
  constexpr bool with_nccl = true;
#else
  constexpr bool with_nccl = false;
  if (cfg.backend == "nccl")
    input_error("recipe key `dist.backend`: `nccl` needs kiln built with CUDA (cmake -DKILN_CUDA=ON)");
#endif
  const std::string backend = cfg.backend == "nccl" || (cfg.backend == "auto" && cuda && with_nccl) ? "nccl" : "mpi";
  // Every rank checks every rank's choice before the first collective, so that a node without a
  // GPU or two ranks on one GPU is one error line on every rank instead of mismatched collectives.
  std::string disagreement = check_device_agreement(world.gather_device_choices(world.device_choice(backend)));
  if (!disagreement.empty()) throw InputError(disagreement);
  if (backend == "nccl" && !cuda)
    input_error("recipe key `dist.backend`: `nccl` needs a GPU on every rank, and the ranks have none ({})",
                world.device().str());
  std::unique_ptr<Communicator> comm;
#ifdef KILN_WITH_CUDA
  if (backend == "nccl") comm = std::make_unique<NcclCommunicator>(cfg.timeout_s, world);
#endif
  if (!comm) comm = std::make_unique<MpiCommunicator>(cfg.timeout_s);
  // A debugging mode for whole runs: every collective checked (checking_communicator.h), at the
  // cost of all overlap and one small all-gather per collective.
  const char* check = std::getenv("KILN_CHECK_COLLECTIVES");
  if (check && std::string(check) == "1") return std::make_unique<CheckingCommunicator>(std::move(comm));
  return comm;
}

std::string tensors_checksum(const std::vector<at::Tensor>& tensors) {
  Sha256 h;
  for (const auto& t : tensors) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    h.update(c.data_ptr(), static_cast<size_t>(c.numel() * c.element_size()));
  }
  return h.hex();
}

bool same_on_all_ranks(Communicator& comm, const std::vector<at::Tensor>& tensors) {
  std::string hex = tensors_checksum(tensors);
  at::Tensor mine = at::empty({static_cast<int64_t>(hex.size())}, at::kByte);
  std::memcpy(mine.data_ptr(), hex.data(), hex.size());
  at::Tensor root = mine.clone();
  comm.broadcast(root, 0, "checksum");
  // Every rank must know the answer, not only the ones that differ.
  at::Tensor differs = at::full({1}, at::equal(mine, root) ? 0 : 1, at::kInt);
  comm.all_reduce(differs, ReduceOp::Sum, "checksum verdict");
  return differs.item<int>() == 0;
}

std::vector<std::string> all_gather_bytes(const std::string& mine, Communicator& comm) {
  const int n = comm.size();
  if (n == 1) return {mine};
  auto i64 = at::TensorOptions().dtype(at::kLong);
  at::Tensor len = at::full({1}, int64_t(mine.size()), i64);
  at::Tensor lens = at::empty({n}, i64);
  comm.all_gather(lens, len, "gather sizes");
  int64_t max = lens.max().item<int64_t>();
  at::Tensor buf = at::zeros({std::max<int64_t>(max, 1)}, at::TensorOptions().dtype(at::kByte));
  if (!mine.empty()) std::memcpy(buf.data_ptr(), mine.data(), mine.size());
  at::Tensor out = at::empty({n * buf.numel()}, buf.options());
  comm.all_gather(out, buf, "gather bytes");
  std::vector<std::string> all(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r)
    all[size_t(r)].assign(reinterpret_cast<const char*>(out.data_ptr<uint8_t>()) + r * buf.numel(),
                          size_t(lens[r].item<int64_t>()));
  return all;
}

}  // namespace kiln::parallel
