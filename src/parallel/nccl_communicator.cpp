#ifdef KILN_WITH_CUDA
#include "parallel/nccl_communicator.h"

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <thread>

#include "core/error.h"
#include "parallel/world.h"

namespace kiln::parallel {
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

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  c10::Device device{c10::kCUDA, 0};
  c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(true);
  double timeout_s = 600;
};

void NcclWork::wait() {
  std::lock_guard<std::mutex> lock(m);
  if (finished) return;
  c10::cuda::CUDAGuard guard(buf_out.defined() ? buf_out.device() : c10::Device(c10::kCUDA, 0));
  // Host-side polling, so that a dead peer (NCCL would spin forever) meets the deadline.
  const auto started = Clock::now();
  const double every = NcclCommunicator::report_every(owner->timeout_s(op));
  double next_report = every;
  for (int tries = 0;; ++tries) {
    cudaError_t q = cudaEventQuery(done_event);
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady) owner->fail_op(op, std::string("failed: ") + cudaGetErrorString(q));
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
  KILN_CUDA_CHECK(cudaStreamWaitEvent(c10::cuda::getCurrentCUDAStream().stream(), done_event, 0));
  if (copy_back) op.out.copy_(buf_out);
  finished = true;
  buf_out = at::Tensor();
  buf_in = at::Tensor();
}

NcclCommunicator::NcclCommunicator(double timeout_s, World& world)
    : Communicator(timeout_s), impl_(std::make_unique<Impl>()) {
  rank_ = world.rank();
  size_ = world.size();
  KILN_CHECK(world.device().is_cuda(), "NcclCommunicator on {}", world.device().str());
  impl_->device = world.device();
  impl_->timeout_s = timeout_s;
  c10::cuda::CUDAGuard guard(impl_->device);
  impl_->stream = c10::cuda::getStreamFromPool(true, impl_->device.index());
  ncclUniqueId id;
  if (rank_ == 0) KILN_NCCL_CHECK(ncclGetUniqueId(&id));
  int rc = MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) throw InternalError("MPI_Bcast of the NCCL unique id failed");
  KILN_NCCL_CHECK(ncclCommInitRank(&impl_->comm, size_, id, rank_));
}

NcclCommunicator::~NcclCommunicator() {
  if (impl_->comm) {
    cudaStreamSynchronize(impl_->stream.stream());
    ncclCommDestroy(impl_->comm);
  }
}

void NcclCommunicator::fail_op(const Op& op, const std::string& why) {
  // Abort first: it releases the kernels spinning on the dead peer, so the process can exit.
  if (impl_->comm) ncclCommAbort(impl_->comm);
  impl_->comm = nullptr;
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
  switch (op.kind) {
    case Kind::AllReduce:
    case Kind::Barrier:
      KILN_NCCL_CHECK(ncclAllReduce(out, out, w->buf_out.numel(), type, red, impl_->comm, s));
      break;
    case Kind::Broadcast:
      KILN_NCCL_CHECK(ncclBroadcast(out, out, w->buf_out.numel(), type, op.root, impl_->comm, s));
      break;
    case Kind::AllGather:
      KILN_NCCL_CHECK(ncclAllGather(w->buf_in.data_ptr(), out, w->buf_in.numel(), type, impl_->comm, s));
      break;
    case Kind::ReduceScatter:
      KILN_NCCL_CHECK(ncclReduceScatter(w->buf_in.data_ptr(), out, w->buf_out.numel(), type, red, impl_->comm, s));
      break;
  }
  KILN_CUDA_CHECK(cudaEventCreateWithFlags(&w->done_event, cudaEventDisableTiming));
  KILN_CUDA_CHECK(cudaEventRecord(w->done_event, s));
  w->deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s(op)));
  w->op = std::move(op);
  return w;
}

}  // namespace kiln::parallel
#endif  // KILN_WITH_CUDA
