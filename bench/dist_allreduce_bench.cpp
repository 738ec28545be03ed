// All-reduce bus bandwidth over the MPI communicator, 1 KB to 256 MB, beside single-process memcpy
// bandwidth. busbw = algbw * 2(n-1)/n, as nccl-tests defines it (the bytes each rank's link carries
// in a ring all-reduce). Run: mpirun -np 2 [--bind-to none --oversubscribe] bench_dist_allreduce
// With the argument `nccl` (CUDA builds, one GPU per rank) it measures the NCCL communicator on GPU
// tensors up to 1 GB instead, as nccl-tests' all_reduce_perf does (no memcpy column).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"
#include "parallel/world.h"
#ifdef KILN_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  using namespace kiln::parallel;
  World& w = World::get();
  w.configure_threads(1);
  const bool nccl = argc > 1 && std::string(argv[1]) == "nccl";
  std::unique_ptr<Communicator> comm_owner;
#ifdef KILN_WITH_CUDA
  if (nccl) comm_owner = std::make_unique<NcclCommunicator>(600, w);
#endif
  if (nccl && !comm_owner) {
    std::fprintf(stderr, "bench_dist_allreduce nccl: this kiln was built without CUDA/NCCL\n");
    return 2;
  }
  if (!comm_owner) comm_owner = std::make_unique<MpiCommunicator>(600);
  Communicator& comm = *comm_owner;
  const int n = comm.size();
  const c10::Device dev = nccl ? w.device() : c10::Device(c10::kCPU);
  auto sync = [&] {
#ifdef KILN_WITH_CUDA
    if (nccl) cudaDeviceSynchronize();
#endif
  };
  if (w.is_root())
    std::printf("# ranks %d, %s, fp32 in-place all-reduce (sum)%s\n%12s %10s %12s %12s %14s\n", n,
                nccl ? "nccl on GPU tensors" : "mpi on host tensors", nccl ? "" : "; memcpy: one process, same bytes",
                "bytes", "iters", "time_us", "busbw_GB/s", "memcpy_GB/s");
  for (int64_t bytes = 1024; bytes <= (int64_t{nccl ? 1024 : 256} << 20); bytes *= 4) {
    const int64_t numel = bytes / 4;
    at::Tensor t = at::ones({numel}, at::TensorOptions().device(dev));
    // Enough iterations for about half a second at the first estimate, at least 3.
    comm.all_reduce(t, ReduceOp::Sum);
    sync();
    auto t0 = Clock::now();
    comm.all_reduce(t, ReduceOp::Sum);
    sync();
    double once = std::chrono::duration<double>(Clock::now() - t0).count();
    at::Tensor iters_t = at::full({1}, std::max(3.0, std::min(2000.0, 0.5 / std::max(once, 1e-6))), at::kDouble);
    comm.broadcast(iters_t, 0);
    const int iters = static_cast<int>(iters_t.item<double>());
    comm.barrier();
    t0 = Clock::now();
    for (int i = 0; i < iters; ++i) comm.all_reduce(t, ReduceOp::Sum);
    sync();
    double sec = std::chrono::duration<double>(Clock::now() - t0).count() / iters;
    at::Tensor worst = at::full({1}, sec, at::kDouble);
    comm.all_reduce(worst, ReduceOp::Sum);
    sec = worst.item<double>() / n;
    double busbw = bytes / sec * 2.0 * (n - 1) / n / 1e9;
    comm.barrier();
    double memcpy_bw = 0;
    if (w.is_root() && !nccl) {
      std::vector<char> a(bytes, 1), b(bytes);
      std::memcpy(b.data(), a.data(), bytes);
      int reps = static_cast<int>(std::max<int64_t>(3, (int64_t{1} << 30) / bytes));
      auto m0 = Clock::now();
      for (int i = 0; i < reps; ++i) {
        std::memcpy(b.data(), a.data(), bytes);
        a[i % bytes] = b[(i * 7) % bytes];  // keep the copies from being elided
      }
      memcpy_bw = static_cast<double>(bytes) * reps / std::chrono::duration<double>(Clock::now() - m0).count() / 1e9;
    }
    if (w.is_root()) {
      std::printf("%12lld %10d %12.1f %12.3f %14.3f\n", static_cast<long long>(bytes), iters, sec * 1e6, busbw,
                  memcpy_bw);
      std::fflush(stdout);
    }
    comm.barrier();
  }
  return 0;
}
