#ifdef KILN_WITH_CUDA
#include "parallel/nccl_communicator.h"

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "parallel/world.h"

namespace kiln::parallel {

struct NcclCommunicator::Impl {
  explicit Impl(c10::cuda::CUDAStream s) : stream(s) {}
  // Atomic because fail_op() takes it away (and aborts it) from whichever thread noticed.
  std::atomic<ncclComm_t> comm{nullptr};
  c10::Device device{c10::kCUDA, 0};
  c10::cuda::CUDAStream stream;
  // NCCL calls on one communicator must not overlap, and start() runs on autograd's device thread
  // (the gradient hooks) while wait() polls the asynchronous error on the caller's thread.
  std::mutex calls;
};

namespace {

using Clock = std::chrono::steady_clock;

#define KILN_CUDA_CHECK(call)                                                                          \
  do {                                                                                                 \
    cudaError_t e_ = (call);                                                                           \
    if (e_ != cudaSuccess)                                                                             \
      throw ::kiln::InternalError(fmt::format("{}:{}: {} failed: {}", __FILE__, __LINE__, #call,       \
                                              cudaGetErrorString(e_)));                                \
  } while (0)

#define KILN_NCCL_CHECK(call)                                                                          \
  do {                                                                                                 \
    ncclResult_t r_ = (call);                                                                          \
    if (r_ != ncclSuccess)                                                                             \
      throw ::kiln::InternalError(fmt::format("{}:{}: {} failed: {}", __FILE__, __LINE__, #call,       \
                                              ncclGetErrorString(r_)));                                \
  } while (0)

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kChar: return ncclInt8;
    case at::kByte: return ncclUint8;
    default:
      throw InternalError(fmt::format("NCCL has no type for {}", c10::toString(t)));
  }
}

// The communicator is non-blocking: a call that returns ncclInProgress goes on in the background
// (setup, or a collective's enqueue waiting for peers to connect), and nothing may use the
// communicator or its stream until it reaches ncclSuccess. Polled here against the operation's
// deadline, so that a peer that never arrives ends the job like a collective that never finishes.
// The caller holds Impl::calls.
void settle(NcclCommunicator& owner, ncclComm_t comm, const Communicator::Op& op, ncclResult_t r, const char* call,
            Clock::time_point deadline) {
  const auto started = Clock::now();
  const double every = NcclCommunicator::report_every(owner.timeout_s(op));
  double next_report = every;
  for (int tries = 0; r == ncclInProgress; ++tries) {
    if (Clock::now() > deadline)
      owner.fail_op(op, fmt::format("timed out after {:g} s (dist.timeout_s) in {}: a rank died or stopped answering",
                                    owner.timeout_s(op), call));
    if (tries > 100) std::this_thread::sleep_for(std::chrono::microseconds(50));
    const double waited = std::chrono::duration<double>(Clock::now() - started).count();
    if (waited >= next_report) {
      owner.report_waiting(op, waited);
      next_report += every;
    }
    ncclResult_t state = ncclSuccess;
    r = ncclCommGetAsyncError(comm, &state);
    if (r == ncclSuccess) r = state;
  }
  if (r != ncclSuccess)
    owner.fail_op(op, fmt::format("failed in {}: {} ({})", call, ncclGetErrorString(r), ncclGetLastError(comm)));
}

// "" while the communicator is healthy or busy; else what NCCL says went wrong. A failed peer or
// network shows only here: the kernels of the collective would wait for the peer forever.
std::string async_error(NcclCommunicator::Impl& impl) {
  // Skipped while start() is inside NCCL (it may be settling for a while): the next poll asks.
  std::unique_lock<std::mutex> lock(impl.calls, std::try_to_lock);
  if (!lock.owns_lock()) return "";
  ncclComm_t comm = impl.comm.load();
  if (!comm) return "the NCCL communicator was aborted";
  ncclResult_t state = ncclSuccess;
  ncclResult_t r = ncclCommGetAsyncError(comm, &state);
  if (r != ncclSuccess) state = r;
  if (state == ncclSuccess || state == ncclInProgress) return "";
  return fmt::format("NCCL reports {} ({})", ncclGetErrorString(state), ncclGetLastError(comm));
}

struct NcclWork : Work {
  NcclCommunicator* owner = nullptr;
  Communicator::Op op;
  at::Tensor buf_out, buf_in;  // on the device, contiguous
  bool copy_back = false;
  cudaEvent_t done_event = nullptr;
  Clock::time_point deadline;
  bool finished = false;
  std::mutex m;

  ~NcclWork() override {
    if (done_event) cudaEventDestroy(done_event);
  }
  bool done() override {
    std::lock_guard<std::mutex> lock(m);
    return finished || cudaEventQuery(done_event) == cudaSuccess;
  }
  void wait() override;
};

}  // namespace

void NcclWork::wait() {
  std::lock_guard<std::mutex> lock(m);
  if (finished) return;
  NcclCommunicator::Impl& impl = owner->impl();
  c10::cuda::CUDAGuard guard(impl.device);
  // Host-side polling, so that a dead peer (NCCL would spin forever) meets the deadline.
  const auto started = Clock::now();
  const double every = NcclCommunicator::report_every(owner->timeout_s(op));
  double next_report = every;
  for (int tries = 0;; ++tries) {
    cudaError_t q = cudaEventQuery(done_event);
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady) owner->fail_op(op, std::string("failed: ") + cudaGetErrorString(q));
    if (tries % 128 == 0) {
      std::string e = async_error(impl);
      if (!e.empty()) owner->fail_op(op, "failed: " + e + " (a rank died or the network failed)");
    }
    if (Clock::now() > deadline)
      owner->fail_op(op, fmt::format("timed out after {:g} s (dist.timeout_s): a rank died or stopped answering",
                                     owner->timeout_s(op)));
    if (tries > 100) std::this_thread::sleep_for(std::chrono::microseconds(50));
    if (tries % 1024 == 0) {
      const double waited = std::chrono::duration<double>(Clock::now() - started).count();
      if (waited >= next_report) {
        owner->report_waiting(op, waited);
        next_report += every;
      }
    }
  }
  // The caller's later kernels must come after the collective.
  KILN_CUDA_CHECK(cudaStreamWaitEvent(c10::cuda::getCurrentCUDAStream(impl.device.index()).stream(), done_event, 0));
  if (copy_back) op.out.copy_(buf_out);
  finished = true;
  buf_out = at::Tensor();
  buf_in = at::Tensor();
}

NcclCommunicator::NcclCommunicator(double timeout_s, World& world) : Communicator(timeout_s) {
  rank_ = world.rank();
  size_ = world.size();
  KILN_CHECK(world.device().is_cuda(), "NcclCommunicator on {}", world.device().str());
  c10::cuda::CUDAGuard guard(world.device());
  // Taken for the World's device by index: the pool of the current device is GPU 0's on a thread
  // where the rank's device was never made current, and taking from it makes a context there.
  impl_ = std::make_unique<Impl>(c10::cuda::getStreamFromPool(true, world.device().index()));
  impl_->device = world.device();
  ncclUniqueId id;
  if (rank_ == 0) KILN_NCCL_CHECK(ncclGetUniqueId(&id));
  int rc = MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) throw InternalError("MPI_Bcast of the NCCL unique id failed");

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  // KILN_NCCL_BLOCKING=1: NCCL's blocking mode, where setup and enqueue wait without a deadline
  // (a fallback should the non-blocking mode misbehave on some NCCL version).
  const char* blocking = std::getenv("KILN_NCCL_BLOCKING");
  config.blocking = blocking && std::string(blocking) == "1" ? 1 : 0;
  Op setup;
  setup.label = "NCCL communicator setup";
  const auto deadline = deadline_after(timeout_s);
  std::lock_guard<std::mutex> lock(impl_->calls);
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, size_, id, rank_, &config);
  impl_->comm = comm;
  settle(*this, comm, setup, r, "ncclCommInitRankConfig", deadline);
}

NcclCommunicator::~NcclCommunicator() {
  ncclComm_t comm = impl_->comm.exchange(nullptr);
  if (!comm) return;
  // Unwinding from an error, this rank may leave collectives in flight that its peers will never
  // join: waiting for them would hang the exit, so abort. Otherwise the last ones finish first,
  // within the deadline (a peer that died meanwhile must not hang it either).
  bool idle = std::uncaught_exceptions() == 0;
  if (idle) {
    const auto deadline = deadline_after(timeout_s());
    cudaError_t q;
    while ((q = cudaStreamQuery(impl_->stream.stream())) == cudaErrorNotReady && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    idle = q == cudaSuccess;
  }
  if (idle)
    ncclCommDestroy(comm);
  else
    ncclCommAbort(comm);
}

void NcclCommunicator::fail_op(const Op& op, const std::string& why) {
  // Abort first: it releases the kernels spinning on the dead peer, so the process can exit.
  if (ncclComm_t comm = impl_->comm.exchange(nullptr)) ncclCommAbort(comm);
  fail(op, why);
}

WorkPtr NcclCommunicator::start(Op op) {
  c10::cuda::CUDAGuard guard(impl_->device);
  auto w = std::make_shared<NcclWork>();
  w->owner = this;
  const bool reduce = op.kind == Kind::AllReduce || op.kind == Kind::ReduceScatter;
  const bool in_place = op.kind == Kind::AllReduce || op.kind == Kind::Broadcast;
  auto on_device = [&](const at::Tensor& t) { return t.device() == impl_->device && t.is_contiguous(); };
  if (op.kind == Kind::Barrier) {
    w->buf_out = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(impl_->device));
  } else if (on_device(op.out)) {
    w->buf_out = op.out;
  } else {
    w->buf_out = at::empty(op.out.sizes(), op.out.options().device(impl_->device));
    if (in_place) w->buf_out.copy_(op.out);
    w->copy_back = true;
  }
  if (op.in.defined()) w->buf_in = on_device(op.in) ? op.in : op.in.to(impl_->device).contiguous();

  cudaStream_t caller = c10::cuda::getCurrentCUDAStream(impl_->device.index()).stream();
  cudaStream_t s = impl_->stream.stream();
  cudaEvent_t ready;
  KILN_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  KILN_CUDA_CHECK(cudaEventRecord(ready, caller));
  KILN_CUDA_CHECK(cudaStreamWaitEvent(s, ready, 0));
  cudaEventDestroy(ready);
  // The caching allocator must not hand these blocks out again before our stream is done with them.
  c10::cuda::CUDACachingAllocator::recordStream(w->buf_out.storage().data_ptr(), impl_->stream);
  if (w->buf_in.defined()) c10::cuda::CUDACachingAllocator::recordStream(w->buf_in.storage().data_ptr(), impl_->stream);

  const ncclRedOp_t red = reduce && op.reduce == ReduceOp::Avg ? ncclAvg : ncclSum;
  void* out = w->buf_out.data_ptr();
  const ncclDataType_t type = nccl_type(w->buf_out.scalar_type());
  // One deadline from here: the enqueue (which may wait for peers) and the collective share it.
  const auto deadline = deadline_after(timeout_s(op));
  {
    std::lock_guard<std::mutex> lock(impl_->calls);
    ncclComm_t comm = impl_->comm.load();
    if (!comm) fail_op(op, "could not start: the NCCL communicator was aborted");
    ncclResult_t r = ncclSuccess;
    const char* call = "";
    switch (op.kind) {
      case Kind::AllReduce:
      case Kind::Barrier:
        call = "ncclAllReduce";
        r = ncclAllReduce(out, out, w->buf_out.numel(), type, red, comm, s);
        break;
      case Kind::Broadcast:
        call = "ncclBroadcast";
        r = ncclBroadcast(out, out, w->buf_out.numel(), type, op.root, comm, s);
        break;
      case Kind::AllGather:
        call = "ncclAllGather";
        r = ncclAllGather(w->buf_in.data_ptr(), out, w->buf_in.numel(), type, comm, s);
        break;
      case Kind::ReduceScatter:
        call = "ncclReduceScatter";
        r = ncclReduceScatter(w->buf_in.data_ptr(), out, w->buf_out.numel(), type, red, comm, s);
        break;
    }
    settle(*this, comm, op, r, call, deadline);
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&w->done_event, cudaEventDisableTiming));
    KILN_CUDA_CHECK(cudaEventRecord(w->done_event, s));
  }
  w->deadline = deadline;
  w->op = std::move(op);
  return w;
}

}  // namespace kiln::parallel
#endif  // KILN_WITH_CUDA
