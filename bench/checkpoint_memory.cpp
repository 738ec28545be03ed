// Peak host memory of every rank while the trainer writes a checkpoint (ZeRO-1 or not): figures
// only. A model of M million float32 parameters in full fine-tuning takes one step, then
// Trainer::save_checkpoint runs with each rank's peak-RSS counter reset just before it
// (/proc/self/clear_refs), so the peak it reports afterwards is that of the checkpoint alone.
//   mpirun -np 2 build/bench/bench_checkpoint_memory [M=64] [zero1=1]
#include <malloc.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/config.h"
#include "core/log.h"
#include "parallel/communicator.h"
#include "parallel/world.h"
#include "train/task.h"
#include "train/trainer.h"

using namespace kiln;

namespace {

// VmRSS / VmHWM of this process in MB.
double status_mb(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) / 1024.0;
  return -1;
}

// Many tensors, as a model has: a loss that gives every element a gradient.
class BigTask : public train::Task {
 public:
  explicit BigTask(int64_t millions) : millions_(millions) {}
  void build(Recipe& r, parallel::World&, parallel::Communicator&) override {
    at::manual_seed(uint64_t(r.train.seed));
    const int64_t per = 1 << 20;  // 1M elements per tensor
    for (int64_t i = 0; i < millions_; ++i) weights_.push_back(at::randn({1024, per / 1024}).requires_grad_(true));
  }
  train::NamedTensors trainable() override {
    train::NamedTensors out;
    for (size_t i = 0; i < weights_.size(); ++i) out.emplace_back(fmt::format("w{}", i), weights_[i]);
    return out;
  }
  void set_training(bool) override {}
  int64_t size(train::Split) const override { return 64; }
  data::Batch collate(train::Split, const std::vector<int64_t>& idx) override {
    data::Batch b;
    b["example_index"] = at::tensor(idx, at::kLong);
    b.num_targets = int64_t(idx.size());
    return b;
  }
  train::LossSum loss(const data::Batch& b) override {
    at::Tensor sum = at::zeros({});
    for (auto& w : weights_) sum = sum + w.pow(2).mean();
    return {sum * double(b.size()), b.size()};
  }
  train::LossSum evaluate(const data::Batch& b, train::EvalRecords&) override { return {at::Tensor(), 0}; }
  std::map<std::string, double> metrics(const train::EvalRecords&) override { return {}; }

 private:
  int64_t millions_;
  std::vector<at::Tensor> weights_;
};

}  // namespace

int main(int argc, char** argv) {
  // Large blocks always come from (and go back to) mmap, so each measurement starts from what is
  // live, not from what an earlier free left in malloc's arenas.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  const int64_t millions = argc > 1 ? std::stoll(argv[1]) : 64;
  const bool zero1 = argc > 2 ? std::string(argv[2]) != "0" : true;
  auto& world = parallel::World::get();
  world.configure_threads(1);
  log::setup(world.rank(), world.size(), false, log::Level::warn);
  DistConfig dc;
  auto comm = parallel::make_communicator(dc, world);
  const std::string dir = (std::filesystem::temp_directory_path() / "kiln_bench_checkpoint_memory").string();
  if (world.is_root()) std::filesystem::remove_all(dir);
  comm->barrier();

  Recipe r;
  r.name = "bench";
  r.method = "bench";
  r.train.max_steps = 1;
  r.train.micro_batch = 1;
  r.train.global_batch = world.size();
  r.dist.zero1 = zero1;
  r.checkpoint.run_dir = dir;
  r.checkpoint.keep = 0;
  r.checkpoint.resume = "none";
  r.log.tensorboard = false;
  r.tree = recipe::parse_string("method: bench\n", "bench.yaml");
  BigTask task(millions);
  task.build(r, world, *comm);
  train::Trainer trainer(r, task, world, *comm);
  trainer.fit();  // one step (and its own checkpoint)

  comm->barrier();
  const double before = status_mb("VmRSS");
  std::ofstream("/proc/self/clear_refs") << "5";  // peak RSS := current RSS
  const double reset = status_mb("VmHWM");
  comm->barrier();
  trainer.save_checkpoint(dir + "/measured.h5");
  const double peak = status_mb("VmHWM");
  std::string line = fmt::format("rank {}: RSS before {:.0f} MB, peak while checkpointing {:.0f} MB (+{:.0f} MB){}",
                                 world.rank(), before, peak, peak - before,
                                 reset > before + 1 ? " (peak counter could not be reset)" : "");
  auto lines = parallel::all_gather_bytes(line, *comm);
  if (world.is_root()) {
    std::printf("%lld M float32 parameters (%.0f MB), full fine-tuning, AdamW state %.0f MB, %d ranks, zero1 %s\n",
                static_cast<long long>(millions), double(millions) * 4.0 * 1.048576, double(millions) * 8.0 * 1.048576,
                world.size(), zero1 ? "on" : "off");
    for (auto& l : lines) std::printf("%s\n", l.c_str());
    std::filesystem::remove_all(dir);
  }
  return 0;
}
