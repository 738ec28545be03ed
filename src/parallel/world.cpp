#include "parallel/world.h"

#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#ifdef KILN_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

#include <algorithm>
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
          "MPI_THREAD_SERIALIZED ({})", provided, int(MPI_THREAD_SERIALIZED)));
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

  const char* request = std::getenv("KILN_DEVICE");
  device_request_ = request ? request : "";
  visible_gpus_ = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  if (visible_gpus_ > 0 && device_request_ != "cpu") {
    // local_rank % n, not local_rank: where the launcher gives each rank its own GPUs (srun
    // --gpus-per-task, CUDA_VISIBLE_DEVICES per rank), every rank sees its GPU as cuda:0. Two
    // ranks that land on one GPU are found by comparing UUIDs (check_device_agreement).
    device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank_ % visible_gpus_));
#ifdef KILN_WITH_CUDA
    // Made current before anything touches CUDA: otherwise every rank creates its context, torch's
    // default streams and its caching allocator's first blocks on GPU 0, and a tensor put on
    // plain "cuda" goes there too. Errors are kept for the agreement check, because a throw from
    // here would leave World half-built for the error path that calls World::get() again.
    try {
      c10::cuda::set_device(device_.index());
      cudaDeviceProp prop;
      cudaError_t e = cudaGetDeviceProperties(&prop, device_.index());
      if (e != cudaSuccess) throw std::runtime_error(cudaGetErrorString(e));
      for (unsigned char b : prop.uuid.bytes) gpu_uuid_ += fmt::format("{:02x}", b);
    } catch (const std::exception& e) {
      device_problem_ = fmt::format("{} failed: {}", device_.str(), shorten(e.what(), 200));
    }
#endif
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

DeviceChoice World::device_choice(const std::string& backend) const {
  DeviceChoice c;
  c.rank = rank_;
  c.host = hostname_;
  c.local_rank = local_rank_;
  c.device = device_.str();
  c.gpu = gpu_uuid_;
  c.visible_gpus = visible_gpus_;
  c.request = device_request_;
  c.backend = backend;
  c.problem = device_problem_;
  return c;
}

std::vector<DeviceChoice> World::gather_device_choices(const DeviceChoice& mine) const {
  if (size_ == 1) return {mine};
  // Fields travel as text split by the ASCII unit separator; whatever a user put into KILN_DEVICE
  // must not break the split.
  constexpr char kSep = '\x1f';
  auto clean = [](std::string s) {
    for (char& ch : s)
      if (ch == kSep || ch == '\n') ch = ' ';
    return s.size() > 200 ? s.substr(0, 200) : s;
  };
  std::string line;
  for (const std::string& f : {std::to_string(mine.rank), clean(mine.host), std::to_string(mine.local_rank),
                               clean(mine.device), clean(mine.gpu), std::to_string(mine.visible_gpus),
                               clean(mine.request), clean(mine.backend), clean(mine.problem)})
    line += f + kSep;
  int len = static_cast<int>(line.size());
  std::vector<int> lens(static_cast<size_t>(size_));
  mpi_check(MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD), "MPI_Allgather");
  std::vector<int> offsets(static_cast<size_t>(size_), 0);
  for (int r = 1; r < size_; ++r) offsets[size_t(r)] = offsets[size_t(r - 1)] + lens[size_t(r - 1)];
  std::vector<char> all(static_cast<size_t>(offsets.back() + lens.back()));
  mpi_check(MPI_Allgatherv(line.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR,
                           MPI_COMM_WORLD),
            "MPI_Allgatherv");
  std::vector<DeviceChoice> out;
  for (int r = 0; r < size_; ++r) {
    std::vector<std::string> f;
    std::string text(all.data() + offsets[size_t(r)], size_t(lens[size_t(r)]));
    for (size_t p = 0, q; (q = text.find(kSep, p)) != std::string::npos; p = q + 1) f.push_back(text.substr(p, q - p));
    KILN_CHECK(f.size() == 9, "rank {} sent {} device fields, not 9", r, f.size());
    DeviceChoice c;
    c.rank = std::stoi(f[0]);
    c.host = f[1];
    c.local_rank = std::stoi(f[2]);
    c.device = f[3];
    c.gpu = f[4];
    c.visible_gpus = std::stoi(f[5]);
    c.request = f[6];
    c.backend = f[7];
    c.problem = f[8];
    out.push_back(std::move(c));
  }
  return out;
}

namespace {

// "rank 3", "ranks 0,1", "local ranks 0-7,9": a job of hundreds of ranks still gives one short line.
std::string rank_list(const std::string& word, std::vector<int> ranks) {
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  std::string out;
  int runs = 0;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (++runs > 12) {
      out += ",...";
      break;
    }
    if (!out.empty()) out += ',';
    if (j == i)
      out += std::to_string(ranks[i]);
    else
      out += fmt::format(j == i + 1 ? "{},{}" : "{}-{}", ranks[i], ranks[j]);
    i = j + 1;
  }
  return fmt::format("{}{} {}", word, ranks.size() == 1 ? "" : "s", out);
}

std::string host_list(const std::vector<std::string>& hosts) {
  std::vector<std::string> h;
  for (const auto& x : hosts)
    if (std::find(h.begin(), h.end(), x) == h.end()) h.push_back(x);
  std::string out = h.size() == 1 ? "host " : "hosts ";
  for (size_t i = 0; i < h.size() && i < 4; ++i) out += (i ? ", " : "") + h[i];
  if (h.size() > 4) out += fmt::format(" and {} more", h.size() - 4);
  return out;
}

// Groups ranks by a key in the order the keys first appear: "ranks 0,1 on cuda, rank 2 on cpu".
template <typename Key>
std::vector<std::pair<std::string, std::vector<int>>> group(const std::vector<DeviceChoice>& all, Key key) {
  std::vector<std::pair<std::string, std::vector<int>>> out;
  for (const auto& c : all) {
    std::string k = key(c);
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& g) { return g.first == k; });
    if (it == out.end()) it = out.emplace(out.end(), k, std::vector<int>{});
    it->second.push_back(c.rank);
  }
  return out;
}

std::string device_type(const DeviceChoice& c) { return c.device.substr(0, c.device.find(':')); }

}  // namespace

std::string check_device_agreement(const std::vector<DeviceChoice>& all) {
  // What one rank asked for and did not get comes first: it explains the disagreements below.
  std::vector<int> unknown, unmet, broken;
  std::vector<std::string> unmet_hosts, broken_hosts;
  std::string unknown_value, broken_why;
  for (const auto& c : all) {
    const std::string& r = c.request;
    if (!(r.empty() || r == "auto" || r == "cpu" || r == "cuda")) {
      unknown.push_back(c.rank);
      unknown_value = r;
    } else if (r == "cuda" && device_type(c) != "cuda") {
      unmet.push_back(c.rank);
      unmet_hosts.push_back(c.host);
    } else if (!c.problem.empty()) {
      broken.push_back(c.rank);
      broken_hosts.push_back(c.host);
      broken_why = c.problem;
    }
  }
  if (!unknown.empty())
    return fmt::format("{}: KILN_DEVICE={}: expected auto, cpu or cuda", rank_list("rank", unknown),
                       shorten(unknown_value, 40));
  if (!unmet.empty())
    return fmt::format("{} ({}): KILN_DEVICE=cuda but torch sees no GPU there; check the NVIDIA driver and "
                       "CUDA_VISIBLE_DEVICES on those nodes",
                       rank_list("rank", unmet), host_list(unmet_hosts));
  if (!broken.empty())
    return fmt::format("{} ({}): cannot use the GPU: {}", rank_list("rank", broken), host_list(broken_hosts),
                       broken_why);

  auto types = group(all, device_type);
  if (types.size() > 1) {
    std::string parts;
    std::vector<std::string> cpu_hosts;
    for (const auto& [type, ranks] : types)
      parts += (parts.empty() ? "" : ", ") + rank_list("rank", ranks) + " on " + type;
    for (const auto& c : all)
      if (device_type(c) == "cpu") cpu_hosts.push_back(c.host);
    return fmt::format("{}: every rank must use the same device type; torch sees no GPU on {} (check the NVIDIA "
                       "driver and CUDA_VISIBLE_DEVICES there), or run every rank on the CPU with KILN_DEVICE=cpu",
                       parts, host_list(cpu_hosts));
  }
  auto backends = group(all, [](const DeviceChoice& c) { return c.backend; });
  if (backends.size() > 1) {
    std::string parts;
    for (const auto& [backend, ranks] : backends)
      parts += (parts.empty() ? "" : ", ") + rank_list("rank", ranks) + " would use " + backend;
    return fmt::format("{}: every rank must use the same communicator (recipe key `dist.backend`)", parts);
  }

  // Two ranks on one GPU: NCCL does not support it (it may hang), and under MPI the ranks would
  // silently share one GPU's memory and time. Ranks are told apart per host, GPUs by UUID.
  int hosts_sharing = 0;
  std::string host_shared, device_shared;
  std::vector<int> local_all, local_shared;
  size_t gpus = 0;
  for (const auto& [host, ranks] : group(all, [](const DeviceChoice& c) { return c.host; })) {
    std::vector<std::pair<std::string, std::vector<const DeviceChoice*>>> by_gpu;
    for (const auto& c : all) {
      if (c.host != host || device_type(c) != "cuda") continue;
      std::string key = c.gpu.empty() ? c.device : c.gpu;
      auto it = std::find_if(by_gpu.begin(), by_gpu.end(), [&](const auto& g) { return g.first == key; });
      if (it == by_gpu.end()) it = by_gpu.emplace(by_gpu.end(), key, std::vector<const DeviceChoice*>{});
      it->second.push_back(&c);
    }
    auto shared = std::find_if(by_gpu.begin(), by_gpu.end(), [](const auto& g) { return g.second.size() > 1; });
    if (shared == by_gpu.end() || ++hosts_sharing > 1) continue;
    host_shared = host;
    device_shared = shared->second.front()->device;
    gpus = by_gpu.size();
    for (const auto& g : by_gpu)
      for (const DeviceChoice* c : g.second) local_all.push_back(c->local_rank);
    for (const DeviceChoice* c : shared->second) local_shared.push_back(c->local_rank);
  }
  if (hosts_sharing == 0) return "";
  std::string others = hosts_sharing == 1 ? ""
                                          : fmt::format(" (and {} other host{})", hosts_sharing - 1,
                                                        hosts_sharing > 2 ? "s" : "");
  return fmt::format("host {}{} has {} ranks ({}) but {} GPU{} for them: {} would share {}; start at most {} "
                     "rank{} on a host (one per GPU), or run on the CPU with KILN_DEVICE=cpu",
                     host_shared, others, local_all.size(), rank_list("local rank", local_all), gpus,
                     gpus == 1 ? "" : "s", rank_list("local rank", local_shared), device_shared, gpus,
                     gpus == 1 ? "" : "s");
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
