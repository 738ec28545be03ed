#include "parallel/mpi_communicator.h"

#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif
#ifdef KILN_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <thread>
#include <utility>

#include "core/error.h"
#include "parallel/world.h"

namespace kiln::parallel {
namespace {

using Clock = std::chrono::steady_clock;

// MPI types that MPI_SUM understands. Half and bfloat16 are not among them: they are reduced by
// kiln's own operations (sum_16bit), everything else in a float32 copy.
MPI_Datatype reducible_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kShort: return MPI_INT16_T;
    case at::kChar: return MPI_INT8_T;
    case at::kByte: return MPI_UINT8_T;
    default: return MPI_DATATYPE_NULL;
  }
}

bool is_16bit_float(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

// inout[i] = in[i] + inout[i], added in float and rounded to T at once, as NCCL does on every hop
// of its ring: a 16-bit bucket is then reduced in its own precision by both backends, and on two
// ranks it is exactly at::add(a, b) on either rank, in whichever order MPI pairs them.
template <typename T>
void sum_16bit(void* in, void* inout, int* len, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = static_cast<T>(static_cast<float>(a[i]) + static_cast<float>(b[i]));
}

std::string mpi_error(int rc) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  return std::string(msg, len);
}

bool query_cuda_aware() {
  const char* env = std::getenv("KILN_MPI_CUDA_AWARE");
  if (env && std::string(env) == "0") return false;
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

struct MpiWork : Work {
  Communicator::Op op;
  at::Tensor buf_out, buf_in;  // what MPI reads and writes: contiguous, host unless CUDA-aware
  bool copy_back = false;      // buf_out is a staging copy of op.out
  bool avg = false;
  int world = 1;
  std::mutex m;
  std::condition_variable cv;
  bool finished = false, finalized = false;

  void wait() override {
    {
      std::unique_lock<std::mutex> lock(m);
      cv.wait(lock, [&] { return finished; });
      if (finalized) return;
      finalized = true;
    }
    // The division and the copy back run here, on the caller's thread, so that the communication
    // thread never runs torch kernels (and never touches a CUDA stream).
    if (avg) buf_out.div_(world);
    if (copy_back) op.out.copy_(buf_out);
    buf_out = at::Tensor();
    buf_in = at::Tensor();
  }
  bool done() override {
    std::lock_guard<std::mutex> lock(m);
    return finished;
  }
};

}  // namespace

struct MpiCommunicator::Impl {
  MpiCommunicator* owner;
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  bool cuda_aware = false;
  double timeout_s;
  std::mutex m;
  std::condition_variable cv;
  std::deque<std::shared_ptr<MpiWork>> queue;
  bool stop = false;
  std::thread thread;
  // Two bytes per element for MPI; the element-wise sums above are the operations on it.
  MPI_Datatype type_16bit = MPI_DATATYPE_NULL;
  MPI_Op sum_bf16 = MPI_OP_NULL, sum_fp16 = MPI_OP_NULL;

  std::pair<MPI_Datatype, MPI_Op> reduction(at::ScalarType t) const {
    if (t == at::kBFloat16) return {type_16bit, sum_bf16};
    if (t == at::kHalf) return {type_16bit, sum_fp16};
    return {reducible_type(t), MPI_SUM};
  }

  void loop() {
    for (;;) {
      std::shared_ptr<MpiWork> w;
      {
        std::unique_lock<std::mutex> lock(m);
        cv.wait(lock, [&] { return stop || !queue.empty(); });
        if (queue.empty()) return;
        w = std::move(queue.front());
        queue.pop_front();
      }
      run(*w);
      {
        std::lock_guard<std::mutex> lock(w->m);
        w->finished = true;
      }
      w->cv.notify_all();
    }
  }

  // Polls one request to completion. MPI (OpenMPI's non-blocking collectives in particular) only
  // progresses inside MPI calls, so this thread keeps calling MPI_Test; after a short spin it
  // yields and then naps, leaving the cores to the backward pass it is meant to overlap.
  void poll(MpiWork& w, MPI_Request& req, Clock::time_point deadline) {
    const auto started = Clock::now();
    const double every = Communicator::report_every(owner->timeout_s(w.op));
    double next_report = every;
    for (int tries = 0;; ++tries) {
      int flag = 0;
      int rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) owner->fail(w.op, "failed: " + mpi_error(rc) + " (a rank died or the network failed)");
      if (flag) return;
      if (Clock::now() > deadline)
        owner->fail(w.op, fmt::format("timed out after {:g} s (dist.timeout_s): a rank died or stopped answering",
                                      owner->timeout_s(w.op)));
      if (tries < 200) continue;
      if (tries % 256 == 0) {
        const double waited = std::chrono::duration<double>(Clock::now() - started).count();
        if (waited >= next_report) {
          owner->still_waiting(w.op, waited);
          next_report += every;
        }
      }
      if (tries < 2000)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  void check(MpiWork& w, int rc) {
    if (rc != MPI_SUCCESS) owner->fail(w.op, "could not start: " + mpi_error(rc));
  }

  void run(MpiWork& w) {
    auto deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(owner->timeout_s(w.op)));
    MPI_Request req = MPI_REQUEST_NULL;
    const auto kind = w.op.kind;
    if (kind == Kind::Barrier) {
      check(w, MPI_Ibarrier(comm, &req));
      poll(w, req, deadline);
      return;
    }
    char* out = static_cast<char*>(w.buf_out.data_ptr());
    const bool reduce = kind == Kind::AllReduce || kind == Kind::ReduceScatter;
    // Reductions go element-wise in their MPI type; everything else moves bytes.
    auto [type, sum] =
        reduce ? reduction(w.buf_out.scalar_type()) : std::pair<MPI_Datatype, MPI_Op>{MPI_BYTE, MPI_SUM};
    const int64_t elem = reduce ? w.buf_out.element_size() : 1;
    if (kind == Kind::AllReduce || kind == Kind::Broadcast) {
      // MPI counts are int: larger tensors go in pieces, one after the other.
      const int64_t total = reduce ? w.buf_out.numel() : w.buf_out.numel() * w.buf_out.element_size();
      const int64_t piece = int64_t{1} << 30;
      for (int64_t off = 0; off < total; off += piece) {
        int n = static_cast<int>(std::min(piece, total - off));
        if (kind == Kind::AllReduce)
          check(w, MPI_Iallreduce(MPI_IN_PLACE, out + off * elem, n, type, sum, comm, &req));
        else
          check(w, MPI_Ibcast(out + off * elem, n, type, w.op.root, comm, &req));
        poll(w, req, deadline);
      }
      return;
    }
    const char* in = static_cast<const char*>(w.buf_in.data_ptr());
    const int64_t chunk = kind == Kind::AllGather ? w.buf_in.numel() : w.buf_out.numel();
    const int64_t count = reduce ? chunk : chunk * w.buf_in.element_size();
    KILN_CHECK(count <= INT_MAX, "{}: {} per rank is more than MPI's int count", kind_name(kind), count);
    if (kind == Kind::AllGather)
      check(w, MPI_Iallgather(in, static_cast<int>(count), type, out, static_cast<int>(count), type, comm, &req));
    else
      check(w, MPI_Ireduce_scatter_block(in, out, static_cast<int>(count), type, sum, comm, &req));
    poll(w, req, deadline);
  }
};

MpiCommunicator::MpiCommunicator(double timeout_s) : Communicator(timeout_s), impl_(std::make_unique<Impl>()) {
  World::get();
  impl_->owner = this;
  impl_->timeout_s = timeout_s;
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &impl_->comm);
  if (rc != MPI_SUCCESS) throw InternalError("MPI_Comm_dup failed: " + mpi_error(rc));
  // Errors come back to the poll loop, which names the collective, instead of MPI's default abort.
  MPI_Comm_set_errhandler(impl_->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(impl_->comm, &impl_->rank);
  MPI_Comm_size(impl_->comm, &impl_->size);
  impl_->cuda_aware = query_cuda_aware();
  rc = MPI_Type_contiguous(2, MPI_BYTE, &impl_->type_16bit);
  if (rc == MPI_SUCCESS) rc = MPI_Type_commit(&impl_->type_16bit);
  if (rc == MPI_SUCCESS) rc = MPI_Op_create(&sum_16bit<c10::BFloat16>, 1, &impl_->sum_bf16);
  if (rc == MPI_SUCCESS) rc = MPI_Op_create(&sum_16bit<c10::Half>, 1, &impl_->sum_fp16);
  if (rc != MPI_SUCCESS) throw InternalError("creating the 16-bit float sums for MPI failed: " + mpi_error(rc));
  impl_->thread = std::thread([this] { impl_->loop(); });
}

MpiCommunicator::~MpiCommunicator() {
  {
    std::lock_guard<std::mutex> lock(impl_->m);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (impl_->comm != MPI_COMM_NULL) MPI_Comm_free(&impl_->comm);
  if (impl_->sum_bf16 != MPI_OP_NULL) MPI_Op_free(&impl_->sum_bf16);
  if (impl_->sum_fp16 != MPI_OP_NULL) MPI_Op_free(&impl_->sum_fp16);
  if (impl_->type_16bit != MPI_DATATYPE_NULL) MPI_Type_free(&impl_->type_16bit);
}

int MpiCommunicator::rank() const { return impl_->rank; }
int MpiCommunicator::size() const { return impl_->size; }
bool MpiCommunicator::cuda_aware() const { return impl_->cuda_aware; }

WorkPtr MpiCommunicator::start(Op op) {
  auto w = std::make_shared<MpiWork>();
  w->world = impl_->size;
  if (op.kind != Kind::Barrier) {
    const bool reduce = op.kind == Kind::AllReduce || op.kind == Kind::ReduceScatter;
    const bool in_place = op.kind == Kind::AllReduce || op.kind == Kind::Broadcast;
    const bool cuda = op.out.is_cuda();
    at::ScalarType dtype = op.out.scalar_type();
    // kiln's 16-bit sums run on the host, so their operands must be host memory even where MPI
    // could read the device's.
    const bool host_op = reduce && is_16bit_float(dtype);
    const bool direct = !cuda || (impl_->cuda_aware && !host_op);
    if (reduce && !host_op && reducible_type(dtype) == MPI_DATATYPE_NULL) dtype = at::kFloat;
    auto host = at::TensorOptions().dtype(dtype).device(cuda && !direct ? at::kCPU : op.out.device());
    if (cuda && !direct) host = host.pinned_memory(true);
    auto usable = [&](const at::Tensor& t) { return direct && t.is_contiguous() && t.scalar_type() == dtype; };
#ifdef KILN_WITH_CUDA
    // MPI reads device memory outside torch's streams: the kernels producing it must be done. They
    // were queued on the current stream of the tensor's device, which is not the current device's
    // when the caller's thread has another one current.
    if (cuda && direct) c10::cuda::getCurrentCUDAStream(op.out.device().index()).synchronize();
#endif
    if (usable(op.out)) {
      w->buf_out = op.out;
    } else {
      w->buf_out = at::empty(op.out.sizes(), host);
      if (in_place) w->buf_out.copy_(op.out);
      w->copy_back = true;
    }
    if (op.in.defined()) w->buf_in = usable(op.in) ? op.in : at::empty(op.in.sizes(), host).copy_(op.in);
    w->avg = reduce && op.reduce == ReduceOp::Avg;
  }
  w->op = std::move(op);
  {
    std::lock_guard<std::mutex> lock(impl_->m);
    impl_->queue.push_back(w);
  }
  impl_->cv.notify_one();
  return w;
}

}  // namespace kiln::parallel
