// The process's place in the job: MPI rank, world size, local rank on its node, its device and its
// CPU threads. Works under mpirun, under srun (PMIx/PMI2) and as a singleton without a launcher.
// MPI is initialised on first use (MPI_THREAD_MULTIPLE when available, for the communication
// thread) and finalised at exit.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>
#include <utility>

namespace kiln::parallel {

class World {
 public:
  static World& get();            // initialises MPI on first call

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const std::string& hostname() const { return hostname_; }
  bool is_root() const { return rank_ == 0; }
  c10::Device device() const { return device_; }  // cuda:local_rank on GPU machines, else cpu
  // Sets torch's intra-op threads: `threads` when > 0, else the cores this rank is bound to.
  int configure_threads(int threads);
  int threads() const { return threads_; }
  // One line per rank, gathered to rank 0: rank, host, local rank, device, threads, launcher.
  std::string describe_layout() const;
  const std::string& launcher() const { return launcher_; }  // mpirun | srun | singleton

  // Ends the whole job now (MPI_Abort): for a rank that cannot continue while others wait.
  [[noreturn]] void abort(int code) const;

 private:
  World();
  ~World();
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1, threads_ = 1;
  std::string hostname_, launcher_;
  c10::Device device_{c10::kCPU};
  bool we_initialised_mpi_ = false;
};

// This process's rank and the world size while MPI is running (World::get() was called and MPI is
// not finalised); {0, 1} otherwise. Never initialises MPI: for error paths that run at any time.
std::pair<int, int> running_rank_and_size();
// The MPI library's version, its first line (callable before MPI is initialised).
std::string mpi_library_version();

}  // namespace kiln::parallel
