// The process's place in the job: MPI rank, world size, local rank on its node, its device and its
// CPU threads. Works under mpirun, under srun (PMIx/PMI2) and as a singleton without a launcher.
// MPI is initialised on first use (MPI_THREAD_MULTIPLE when available, for the communication
// thread) and finalised at exit.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>
#include <utility>
#include <vector>

namespace kiln::parallel {

// One rank's device as World chose it, and the communicator it is about to use. Every rank's is
// gathered before the first collective, because a rank that disagrees (no GPU on its node, two
// ranks on one GPU) would otherwise hang the others in mismatched collectives, or run silently slow.
struct DeviceChoice {
  int rank = 0;
  std::string host;
  int local_rank = 0;
  std::string device;     // cpu | cuda:N
  std::string gpu;        // the GPU's UUID: tells GPUs apart when each rank sees its own set; "" on cpu
  int visible_gpus = 0;   // GPUs torch sees on this rank
  std::string request;    // KILN_DEVICE as set ("" when unset): auto | cpu | cuda
  std::string backend;    // mpi | nccl
  std::string problem;    // why this rank cannot use the GPU it chose ("" when it can)
};

// The one-line error for a set of choices that cannot make one job (device types or backends that
// differ, two ranks of a host on one GPU, a KILN_DEVICE that is unknown or could not be honoured),
// naming the ranks and hosts; "" when every rank agrees. Pure, so that it is tested without GPUs.
std::string check_device_agreement(const std::vector<DeviceChoice>& all);

class World {
 public:
  static World& get();            // initialises MPI on first call

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const std::string& hostname() const { return hostname_; }
  bool is_root() const { return rank_ == 0; }
  // cuda:(local_rank % visible GPUs) where torch sees a GPU, else cpu; KILN_DEVICE=cpu forces the CPU.
  // A CUDA device is made the current device of the thread that created the World (normally main).
  c10::Device device() const { return device_; }
  // This rank's choice, with the backend it will use, and (collective) every rank's.
  DeviceChoice device_choice(const std::string& backend) const;
  std::vector<DeviceChoice> gather_device_choices(const DeviceChoice& mine) const;
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
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1, threads_ = 1, visible_gpus_ = 0;
  std::string hostname_, launcher_, device_request_, gpu_uuid_, device_problem_;
  c10::Device device_{c10::kCPU};
  bool we_initialised_mpi_ = false;
};

// This process's rank and the world size while MPI is running (World::get() was called and MPI is
// not finalised); {0, 1} otherwise. Never initialises MPI: for error paths that run at any time.
std::pair<int, int> running_rank_and_size();
// The MPI library's version, its first line (callable before MPI is initialised).
std::string mpi_library_version();

}  // namespace kiln::parallel
