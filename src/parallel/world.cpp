#include "parallel/world.h"

#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "core/log.h"

namespace kiln::parallel {
namespace {

// Decided from the environment before MPI_Init, because after it OpenMPI sets OMPI_COMM_WORLD_*
// itself under srun too. mpirun exports OMPI_COMM_WORLD_RANK to the processes it starts; inside
// an sbatch script SLURM_PROCID is inherited by mpirun's ranks as well, so OMPI_* is checked first.
std::string detect_launcher() {
  if (std::getenv("OMPI_COMM_WORLD_RANK")) return "mpirun";
  if (std::getenv("SLURM_PROCID") || std::getenv("PMIX_RANK") || std::getenv("PMI_RANK")) return "srun";
  return "singleton";
}

int affinity_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 0;
  return CPU_COUNT(&set);
}

void mpi_check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw InternalError(fmt::format("{} failed: {}", what, std::string(msg, len)));
}

}  // namespace

World& World::get() {
  static World world;
  return world;
}

World::World() {
  launcher_ = detect_launcher();
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) {
    // MULTIPLE so that a communication thread may call MPI while the main thread also does (the
    // communicators funnel their own calls through one thread, so SERIALIZED is enough for them).
    int provided = 0;
    mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    if (provided < MPI_THREAD_SERIALIZED)
      throw InternalError(fmt::format(
          "this MPI library gives thread level {} but kiln's communication thread needs at least "
          "MPI_THREAD_SERIALIZED ({})", provided, MPI_THREAD_SERIALIZED));
    we_initialised_mpi_ = true;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);

  MPI_Comm node;
  mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);

  char host[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_Get_processor_name(host, &len);
  hostname_.assign(host, len);

  if (torch::cuda::is_available()) {
    int n = static_cast<int>(torch::cuda::device_count());
    device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank_ % n));
  }
  threads_ = at::get_num_threads();
}

World::~World() {
  if (!we_initialised_mpi_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int World::configure_threads(int threads) {
  if (threads <= 0) {
    int cores = affinity_cores();
    int online = static_cast<int>(std::thread::hardware_concurrency());
    // mpirun --bind-to none (or no binding at all) leaves every rank the whole machine: split the
    // node's cores between the ranks on it rather than oversubscribing them local_size times.
    if (cores <= 0) cores = online > 0 ? online : 1;
    if (local_size_ > 1 && online > 0 && cores >= online) cores = std::max(1, cores / local_size_);
    threads = cores;
  }
  at::set_num_threads(threads);
  threads_ = at::get_num_threads();
  return threads_;
}

std::string World::describe_layout() const {
  std::string mine = fmt::format("rank {}/{} host {} local_rank {}/{} device {} threads {} launcher {}",
                                 rank_, size_, hostname_, local_rank_, local_size_, device_.str(),
                                 threads_, launcher_);
  if (size_ == 1) return mine;
  constexpr int kLine = 256;
  std::vector<char> line(kLine, '\0');
  std::strncpy(line.data(), mine.c_str(), kLine - 1);
  std::vector<char> all(rank_ == 0 ? static_cast<size_t>(kLine) * size_ : 0);
  mpi_check(MPI_Gather(line.data(), kLine, MPI_CHAR, all.data(), kLine, MPI_CHAR, 0, MPI_COMM_WORLD),
            "MPI_Gather");
  if (rank_ != 0) return mine;
  std::string out;
  for (int r = 0; r < size_; ++r) {
    if (r) out += '\n';
    out += std::string(all.data() + static_cast<size_t>(r) * kLine);
  }
  return out;
}

void World::abort(int code) const {
  std::fflush(stdout);
  std::fflush(stderr);
  if (size_ == 1) std::_Exit(code);
  // MPI_Abort goes through the launcher's daemon; should that be gone as well, do not hang here.
  std::thread([code] {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    std::_Exit(code);
  }).detach();
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

std::pair<int, int> running_rank_and_size() {
  int init = 0, fin = 0, size = 1, rank = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) {
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  }
  return {rank, size};
}

std::string mpi_library_version() {
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(mpi, &len);  // allowed before MPI_Init
  std::string line(mpi, size_t(len));
  // The library string may run over several lines and end in NUL: keep its first line.
  if (auto nl = line.find_first_of(std::string("\r\n\0", 3)); nl != std::string::npos) line.resize(nl);
  while (!line.empty() && (line.back() == ' ' || line.back() == ',')) line.pop_back();
  return line;
}

}  // namespace kiln::parallel
