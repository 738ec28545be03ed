// Collectives on tensors behind one interface (Marian's ICommunicator): MpiCommunicator for CPU
// tensors (GPU tensors staged through host memory), NcclCommunicator for CUDA tensors.
//
// Every operation is asynchronous underneath: start it, keep working, wait() on the handle. The
// synchronous calls are start + wait. Operations run in the order they were started, which must be
// the same order on every rank (as with MPI and NCCL themselves).
//
// Watchdog: every operation has a deadline (DistConfig::timeout_s) counted from the moment it is
// issued to MPI/NCCL. When it passes, or the library reports a failed peer, this rank prints ONE
// line to stderr naming the operation, its label, the step context and the rank, and ends the job
// with World::abort. A dead or silent rank therefore never leaves the others hanging.
#pragma once
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace kiln {
struct DistConfig;
}

namespace kiln::parallel {

class World;

enum class ReduceOp { Sum, Avg };

// A started collective. wait() returns once the result is in the output tensor (it never returns
// on timeout: the watchdog ends the process). done() is a cheap poll. Both may be called from any
// one thread; wait() is idempotent.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  virtual bool done() = 0;
};
using WorkPtr = std::shared_ptr<Work>;

class Communicator {
 public:
  enum class Kind { AllReduce, Broadcast, AllGather, ReduceScatter, Barrier };
  struct Op {
    Kind kind = Kind::Barrier;
    at::Tensor out;        // AllReduce/Broadcast: in place; AllGather: size*n; ReduceScatter: n
    at::Tensor in;         // AllGather: n elements; ReduceScatter: size*n elements
    ReduceOp reduce = ReduceOp::Sum;
    int root = 0;
    std::string label;     // shown in timeout messages, e.g. "grad bucket 2/7"
    double timeout_s = 0;  // > 0: this operation's deadline instead of the communicator's
  };

  explicit Communicator(double timeout_s) : timeout_s_(timeout_s) {}
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "mpi" | "nccl"

  // In place: every rank ends with the sum (or mean) over ranks.
  WorkPtr all_reduce_async(at::Tensor t, ReduceOp op, std::string label = {});
  // In place: every rank ends with root's values.
  WorkPtr broadcast_async(at::Tensor t, int root, std::string label = {});
  // out (size * in.numel() elements, any shape) receives rank r's `in` at element offset r*n.
  WorkPtr all_gather_async(at::Tensor out, at::Tensor in, std::string label = {});
  // in has size * out.numel() elements; rank r receives the reduction of chunk r.
  WorkPtr reduce_scatter_async(at::Tensor out, at::Tensor in, ReduceOp op, std::string label = {});
  // timeout_s > 0: a longer deadline for a barrier that waits on slow work of one rank (rank 0
  // merging a data store), which the collective timeout of a training step should not bound.
  WorkPtr barrier_async(std::string label = {}, double timeout_s = 0);

  void all_reduce(at::Tensor t, ReduceOp op, std::string label = {}) { all_reduce_async(t, op, std::move(label))->wait(); }
  void broadcast(at::Tensor t, int root, std::string label = {}) { broadcast_async(t, root, std::move(label))->wait(); }
  void all_gather(at::Tensor out, at::Tensor in, std::string label = {}) { all_gather_async(out, in, std::move(label))->wait(); }
  void reduce_scatter(at::Tensor out, at::Tensor in, ReduceOp op, std::string label = {}) {
    reduce_scatter_async(out, in, op, std::move(label))->wait();
  }
  void barrier(std::string label = {}, double timeout_s = 0) { barrier_async(std::move(label), timeout_s)->wait(); }

  // What the job is doing, for timeout messages: "step 12 (backward)". Thread-safe.
  void set_context(int64_t step, std::string what);
  std::string context() const;
  double timeout_s() const { return timeout_s_; }
  // The deadline of a barrier that waits on long work of some ranks only (rank 0 merging a store,
  // writing or verifying checkpoints; the slowest rank's share of a generation eval): an hour, or
  // dist.timeout_s if longer. A step's collectives keep the short dist.timeout_s.
  double slow_work_timeout_s() const { return std::max(timeout_s_, 3600.0); }
  double timeout_s(const Op& op) const { return op.timeout_s > 0 ? op.timeout_s : timeout_s_; }

 protected:
  virtual WorkPtr start(Op op) = 0;
  // Prints the one-line watchdog message and ends the job. Called from the thread that noticed.
  [[noreturn]] void fail(const Op& op, const std::string& why) const;
  // One line to stderr while an operation waits: what, for how long, when it gives up. Pollers call
  // it every report_every(deadline) seconds, so a dead peer shows before the deadline does.
  void still_waiting(const Op& op, double waited_s) const;
  static double report_every(double timeout_s) { return std::min(30.0, timeout_s / 4); }
  static const char* kind_name(Kind k);

 private:
  void check_op(const Op& op) const;
  std::string describe(const Op& op) const;  // "all_reduce of grad bucket 2/7 (mpi, 1.2 MB) at step 3 (backward)"
  double timeout_s_;
  mutable std::mutex context_mutex_;
  int64_t step_ = -1;
  std::string what_;
};

// backend auto: nccl when the World's device is CUDA and kiln was built with it, else mpi.
// Collective: first every rank checks that all ranks chose the same device type and backend and
// that no two share a GPU (check_device_agreement, world.h); throws the same InputError on every
// rank when they do not, and when `nccl` is asked for without CUDA.
std::unique_ptr<Communicator> make_communicator(const kiln::DistConfig& cfg, World& world);

// Every rank's bytes, on every rank (all[r] from rank r). Collective.
std::vector<std::string> all_gather_bytes(const std::string& mine, Communicator& comm);

// A SHA-256 over the bytes of the tensors (CPU copies), for checking that ranks agree.
std::string tensors_checksum(const std::vector<at::Tensor>& tensors);
// Collective: true when every rank's checksum of `tensors` equals rank 0's.
bool same_on_all_ranks(Communicator& comm, const std::vector<at::Tensor>& tensors);

}  // namespace kiln::parallel
