#include "train/trainer.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "dist/communicator.h"
#include "dist/grad_sync.h"
#include "dist/zero1.h"
#include "dist/world.h"
#include "methods/task.h"
#include "train/optimizer.h"
#include "train/run_log.h"
#include "train/schedule.h"
#include "train/signals.h"

#ifndef KILN_VERSION
#define KILN_VERSION "unknown"
#endif

namespace kiln::train {

namespace fs = std::filesystem;
using methods::Split;

std::string run_dir_of(const Recipe& r) {
  if (!r.checkpoint.run_dir.empty()) return r.checkpoint.run_dir;
  return (fs::path("checkpoints") / (r.name.empty() ? "run" : r.name)).string();
}

namespace {

// bf16 autocast for the forward pass, on the device the model lives on; restored on exit.
class Autocast {
 public:
  Autocast(bool on, c10::Device device) : on_(on), cuda_(device.is_cuda()) {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    auto dt = cuda_ ? at::kCUDA : at::kCPU;
    prev_ = at::autocast::is_autocast_enabled(dt);
    at::autocast::set_autocast_dtype(dt, at::kBFloat16);
    at::autocast::set_autocast_enabled(dt, true);
#else
    if (cuda_) {
      prev_ = at::autocast::is_enabled();
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(true);
    } else {
      prev_ = at::autocast::is_cpu_enabled();
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
#endif
  }
  ~Autocast() {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(cuda_ ? at::kCUDA : at::kCPU, prev_);
#else
    if (cuda_)
      at::autocast::set_enabled(prev_);
    else
      at::autocast::set_cpu_enabled(prev_);
#endif
    // Cached bf16 copies of weights must not outlive the step: the optimizer changes the weights.
    at::autocast::clear_cache();
  }

 private:
  bool on_, cuda_, prev_ = false;
};

at::Tensor scalar_tensor(std::vector<double> v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kDouble));
}

// " name=value" for each metric, as the log's eval lines show them.
std::string metrics_line(const std::map<std::string, double>& metrics) {
  std::string line;
  for (auto& [k, v] : metrics) line += fmt::format(" {}={:.4f}", k, v);
  return line;
}

}  // namespace

Trainer::Trainer(const Recipe& recipe, methods::Task& task, dist::World& world, dist::Communicator& comm)
    : recipe_(recipe), task_(task), world_(world), comm_(comm) {
  const TrainConfig& t = recipe.train;
  run_dir_ = run_dir_of(recipe);
  ckpt_dir_ = (fs::path(run_dir_) / "checkpoints").string();
  params_ = task.trainable();
  if (params_.empty()) input_error("method `{}` has no trainable parameters (lora.enabled: false and nothing else trains?)",
                                   recipe.method);
  for (auto& [name, p] : params_)
    KILN_CHECK(p.requires_grad(), "trainable parameter {} does not require grad", name);

  const int64_t per_pass = t.micro_batch * world.size();
  if (t.global_batch == 0) {
    global_batch_ = per_pass;
  } else {
    if (t.global_batch % per_pass != 0)
      input_error("train.global_batch = {} is not a multiple of train.micro_batch ({}) x ranks ({}) = {}",
                  t.global_batch, t.micro_batch, world.size(), per_pass);
    global_batch_ = t.global_batch;
  }
  accum_ = global_batch_ / per_pass;

  const int64_t n = task.size(Split::train);
  if (n == 0) input_error("the train split of method `{}` is empty", recipe.method);
  sampler_ = std::make_unique<data::Sampler>(n, global_batch_, world.size(), world.rank(), uint64_t(t.seed), true,
                                             recipe.data.group_by_length ? task.lengths(Split::train)
                                                                         : std::vector<int64_t>{});
  total_steps_ = t.max_steps > 0 ? t.max_steps
                                 : int64_t(std::ceil(t.epochs * double(sampler_->batches_per_epoch()) - 1e-9));
  if (total_steps_ <= 0) input_error("train.epochs = {} gives no training step", t.epochs);
  warmup_ = warmup_steps(t.warmup_steps, t.warmup_ratio, total_steps_);
  schedule_ = std::make_unique<Schedule>(t.schedule, t.lr, warmup_, total_steps_);
  if (t.precision == "fp16")
    input_error("train.precision: fp16 needs loss scaling, which kiln does not do; use bf16 (or fp32)");
  setup_optimizer();
}

Trainer::~Trainer() = default;

void Trainer::setup_optimizer() {
  const TrainConfig& t = recipe_.train;
  std::vector<at::Tensor> tensors;
  std::vector<bool> decay;
  for (auto& [name, p] : params_) {
    tensors.push_back(p);
    decay.push_back(task_.decays(name, p));
  }
  // Bucketed all-reduce overlapped with backward; Sum, since every rank's loss is already divided
  // by the global target count. With dist.zero1 the buckets are reduce-scattered into shards that
  // Zero1AdamW steps (same arithmetic as AdamW below, 1/N of the state per rank).
  if (world_.size() > 1) sync_ = std::make_unique<dist::GradSync>(tensors, comm_, recipe_.dist, dist::ReduceOp::Sum);
  if (recipe_.dist.zero1 && world_.size() > 1) {
    dist::AdamWOptions o;
    o.lr = t.lr;
    o.beta1 = t.adam_beta1;
    o.beta2 = t.adam_beta2;
    o.eps = t.adam_eps;
    o.weight_decay = t.weight_decay;
    zero_ = std::make_unique<dist::Zero1AdamW>(*sync_, decay, o);
    return;
  }
  std::vector<AdamW::Param> ps;
  for (size_t i = 0; i < params_.size(); ++i) ps.push_back({params_[i].first, params_[i].second, decay[i]});
  opt_ = std::make_unique<AdamW>(std::move(ps), t.adam_beta1, t.adam_beta2, t.adam_eps, t.weight_decay);
}

int64_t Trainer::optimizer_steps() const { return zero_ ? zero_->steps() : opt_->steps(); }

TensorList Trainer::optimizer_state() {
  if (!zero_) return opt_->state();
  dist::AdamWState st = zero_->gather_state();  // collective; the full state lands on rank 0
  TensorList out;
  for (size_t i = 0; i < st.exp_avg.size(); ++i) {
    out.emplace_back(params_[i].first + "|exp_avg", st.exp_avg[i]);
    out.emplace_back(params_[i].first + "|exp_avg_sq", st.exp_avg_sq[i]);
  }
  return out;
}

void Trainer::load_optimizer_state(const TensorList& state, int64_t steps, const std::string& path) {
  if (!zero_) return opt_->load_state(state, steps);
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  dist::AdamWState st;
  st.step = steps;
  for (auto& [name, p] : params_) {
    for (auto [suffix, dst] : {std::pair<const char*, std::vector<at::Tensor>*>{"|exp_avg", &st.exp_avg},
                               {"|exp_avg_sq", &st.exp_avg_sq}}) {
      auto it = by_name.find(name + suffix);
      if (it == by_name.end() || !it->second.sizes().equals(p.sizes()))
        input_error("checkpoint {}: optimizer state `{}{}` is missing or has another shape", path, name, suffix);
      dst->push_back(it->second.to(at::kFloat));
    }
  }
  zero_->load_state(st);
}

std::vector<at::Tensor> Trainer::grads() {
  std::vector<at::Tensor> g;
  for (auto& [name, p] : params_) {
    // A parameter the step's loss never reached has a zero gradient.
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    g.push_back(p.grad());
  }
  return g;
}

double Trainer::clip_gradients() {
  at::NoGradGuard ng;
  double sq = 0;
  for (auto& t : grads()) sq += t.to(at::kDouble).pow(2).sum().item<double>();
  double norm = std::sqrt(sq);
  double max = recipe_.train.max_grad_norm;
  // torch.nn.utils.clip_grad_norm_: scale by max/(norm + 1e-6) when that is below 1.
  if (max > 0 && std::isfinite(norm)) {
    double coef = max / (norm + 1e-6);
    if (coef < 1)
      for (auto& t : grads()) t.mul_(coef);
  }
  return norm;
}

double Trainer::train_step() {
  const int64_t micro = recipe_.train.micro_batch;
  comm_.set_context(step_, "collate");
  std::vector<int64_t> mine = sampler_->next();
  std::vector<data::Batch> batches;
  int64_t local_targets = 0;
  for (int64_t k = 0; k < accum_; ++k) {
    int64_t b = k * micro, e = std::min<int64_t>(int64_t(mine.size()), (k + 1) * micro);
    if (b >= e) break;
    batches.push_back(task_.collate(Split::train, std::vector<int64_t>(mine.begin() + b, mine.begin() + e)));
    local_targets += task_.targets(batches.back());
  }
  at::Tensor count = scalar_tensor({double(local_targets)});
  comm_.all_reduce(count, dist::ReduceOp::Sum, "target count");
  const double global_targets = count.item<double>();

  task_.set_training(true);
  double loss_sum = 0;
  int64_t tokens = 0;
  comm_.set_context(step_, "forward/backward");
  for (size_t k = 0; k < batches.size(); ++k) {
    const data::Batch& batch = batches[k];
    // Only the last micro-batch of this rank communicates; the others accumulate .grad locally.
    if (sync_) sync_->set_sync(k + 1 == batches.size());
    methods::LossSum ls;
    {
      Autocast ac(recipe_.train.precision == "bf16", world_.device());
      ls = task_.loss(batch);
    }
    KILN_CHECK(ls.targets == task_.targets(batch), "method counted {} targets, announced {}", ls.targets,
               task_.targets(batch));
    if (global_targets > 0) (ls.sum.to(at::kFloat) / global_targets).backward();
    loss_sum += ls.sum.item<double>();
    tokens += task_.tokens(batch);
  }
  if (global_targets > 0) {
    comm_.set_context(step_, "gradient sync");
    if (sync_ && batches.empty()) {
      // A rank without examples in the final, smaller global batch still joins every bucket's
      // collective, with zero gradients.
      sync_->set_sync(true);
      at::Tensor zero = at::zeros({}, at::kFloat);
      for (auto& [name, p] : params_) zero = zero + p.sum().to(at::kFloat) * 0;
      zero.backward();
    }
    if (sync_) sync_->finish();
    last_lr_ = schedule_->lr(step_);
    if (zero_) {
      last_grad_norm_ = zero_->step(last_lr_, recipe_.train.max_grad_norm);
    } else {
      last_grad_norm_ = clip_gradients();
      opt_->step(last_lr_);
    }
  } else {
    last_lr_ = schedule_->lr(step_);
    log::warn("step {}: no targets in the whole global batch; the step is skipped", step_ + 1);
  }
  for (auto& [name, p] : params_) p.mutable_grad() = at::Tensor();

  // Loss, tokens and the stop flag travel together: one small all-reduce per step.
  at::Tensor stats = scalar_tensor({loss_sum, double(tokens), StopSignals::requested() ? 1.0 : 0.0});
  comm_.all_reduce(stats, dist::ReduceOp::Sum, "step stats");
  last_tokens_ = int64_t(stats[1].item<double>());
  stop_ = stats[2].item<double>() > 0;
  return global_targets > 0 ? stats[0].item<double>() / global_targets : 0.0;
}

std::vector<std::string> all_gather_bytes(const std::string& mine, dist::Communicator& comm) {
  const int n = comm.size();
  if (n == 1) return {mine};
  auto i64 = at::TensorOptions().dtype(at::kLong);
  at::Tensor len = at::full({1}, int64_t(mine.size()), i64);
  at::Tensor lens = at::empty({n}, i64);
  comm.all_gather(lens, len, "gather sizes");
  int64_t max = lens.max().item<int64_t>();
  at::Tensor buf = at::zeros({std::max<int64_t>(max, 1)}, at::TensorOptions().dtype(at::kByte));
  if (!mine.empty()) std::memcpy(buf.data_ptr(), mine.data(), mine.size());
  at::Tensor out = at::empty({n * buf.numel()}, buf.options());
  comm.all_gather(out, buf, "gather bytes");
  std::vector<std::string> all(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r)
    all[size_t(r)].assign(reinterpret_cast<const char*>(out.data_ptr<uint8_t>()) + r * buf.numel(),
                          size_t(lens[r].item<int64_t>()));
  return all;
}

EvalRecords gather_records(const EvalRecords& mine, dist::Communicator& comm) {
  EvalRecords all;
  for (auto& p : all_gather_bytes(mine.serialize(), comm)) all.append(EvalRecords::deserialize(p));
  all.sort_by_example();
  return all;
}

std::map<std::string, double> Trainer::evaluate() {
  const int64_t n = task_.size(Split::eval);
  if (n == 0) return {};
  comm_.set_context(step_, "evaluation");
  task_.set_training(false);
  // Contiguous shares: rank r evaluates [n*r/N, n*(r+1)/N). The gather sorts by example index, so
  // the records, and every metric, are those of a single process.
  const int64_t r = world_.rank(), N = world_.size();
  const int64_t begin = n * r / N, end = n * (r + 1) / N, micro = recipe_.train.micro_batch;
  EvalRecords mine;
  {
    at::NoGradGuard ng;
    for (int64_t b = begin; b < end; b += micro) {
      std::vector<int64_t> idx;
      for (int64_t i = b; i < std::min(end, b + micro); ++i) idx.push_back(i);
      data::Batch batch = task_.collate(Split::eval, idx);
      methods::LossSum ls;
      {
        Autocast ac(recipe_.train.precision == "bf16", world_.device());
        ls = task_.evaluate(batch, mine);
      }
      mine.loss_sum += ls.sum.defined() ? ls.sum.item<double>() : 0.0;
      mine.loss_count += ls.targets;
    }
  }
  task_.set_training(true);
  EvalRecords all = gather_records(mine, comm_);
  records_ = all;
  auto m = task_.metrics(all);
  if (all.loss_count > 0) m["loss"] = all.loss_sum / double(all.loss_count);
  return m;
}

// ---- checkpoints ----

CheckpointFile Trainer::make_checkpoint() {
  CheckpointFile c;
  for (auto& [name, p] : params_) c.groups["weights"].emplace_back(name, p.detach().to(at::kCPU).clone());
  for (auto& [name, t] : optimizer_state()) c.groups["optimizer"].emplace_back(name, t.to(at::kCPU).clone());
  for (auto& [name, t] : task_.extra_state()) c.groups["extra"].emplace_back(name, t.detach().to(at::kCPU).clone());
  // RNG states of every rank (dropout masks): gathered, since rank 0 writes the file alone.
  auto gather_state = [&](at::Tensor s, const std::string& kind) {
    s = s.contiguous();
    at::Tensor all = at::empty({world_.size() * s.numel()}, s.options());
    if (world_.size() > 1)
      comm_.all_gather(all, s, "rng states");
    else
      all.copy_(s.reshape({-1}));
    for (int r = 0; r < world_.size(); ++r)
      c.groups["rng"].emplace_back(fmt::format("{}.rank{}", kind, r), all.narrow(0, r * s.numel(), s.numel()).clone());
  };
  gather_state(at::detail::getDefaultCPUGenerator().get_state(), "cpu");
  if (world_.device().is_cuda())
    gather_state(at::globalContext().defaultGenerator(world_.device()).get_state().to(at::kCPU), "cuda");

  nlohmann::json meta;
  auto st = sampler_->state();
  meta["format"] = 1;
  meta["kiln_version"] = KILN_VERSION;
  meta["method"] = recipe_.method;
  meta["step"] = step_;
  meta["total_steps"] = total_steps_;
  meta["optimizer"] = {{"kind", "adamw"}, {"steps", optimizer_steps()}};
  meta["schedule"] = {{"kind", schedule_->kind()}, {"lr", recipe_.train.lr}, {"warmup", warmup_}, {"total", total_steps_}};
  meta["sampler"] = {{"epoch", st.epoch}, {"position", st.position}};
  meta["world_size"] = world_.size();
  meta["global_batch"] = global_batch_;
  meta["micro_batch"] = recipe_.train.micro_batch;
  meta["seed"] = recipe_.train.seed;
  c.attrs["meta"] = meta.dump();
  c.attrs["recipe"] = recipe::to_yaml(recipe_.tree);
  return c;
}

void Trainer::save_checkpoint(const std::string& path) {
  comm_.set_context(step_, "checkpoint");
  CheckpointFile c = make_checkpoint();
  if (world_.is_root()) {
    write_checkpoint(path, c);
    prune_checkpoints(fs::path(path).parent_path().string(), recipe_.checkpoint.keep);
    log::info("checkpoint {} (step {})", path, step_);
  }
  // Nobody leaves (e.g. exits on a stop signal) before the file is complete.
  comm_.barrier("checkpoint written");
}

void Trainer::load_checkpoint(const std::string& path) {
  CheckpointFile c = read_checkpoint(path);
  nlohmann::json meta = nlohmann::json::parse(c.attrs.count("meta") ? c.attrs.at("meta") : "", nullptr, false);
  if (meta.is_discarded() || !meta.contains("step")) input_error("checkpoint {}: no readable `meta` attribute", path);
  if (meta.value("method", "") != recipe_.method)
    input_error("checkpoint {} was written by method `{}`, this recipe runs `{}`", path, meta.value("method", ""),
                recipe_.method);
  int64_t gb = meta.value("global_batch", int64_t(0));
  if (gb != global_batch_)
    input_error("checkpoint {} was trained with a global batch of {}, this run has {}: set train.global_batch={} to "
                "continue the same sequence of batches",
                path, gb, global_batch_, gb);
  {
    at::NoGradGuard ng;
    std::map<std::string, at::Tensor> w(c.group("weights").begin(), c.group("weights").end());
    for (auto& [name, p] : params_) {
      auto it = w.find(name);
      if (it == w.end()) input_error("checkpoint {} has no weight `{}` (another LoRA setup or method?)", path, name);
      if (!it->second.sizes().equals(p.sizes()))
        input_error("checkpoint {}: weight `{}` has shape [{}], the model needs [{}]", path, name,
                    fmt::join(it->second.sizes(), ", "), fmt::join(p.sizes(), ", "));
      p.copy_(it->second);
    }
    if (c.groups.count("extra")) {
      std::map<std::string, at::Tensor> x(c.group("extra").begin(), c.group("extra").end());
      for (auto& [name, t] : task_.extra_state()) {
        auto it = x.find(name);
        if (it == x.end()) input_error("checkpoint {} has no state `{}`", path, name);
        t.copy_(it->second);
      }
    }
  }
  load_optimizer_state(c.group("optimizer"), meta["optimizer"].value("steps", int64_t(0)), path);
  step_ = meta["step"].get<int64_t>();
  data::Sampler::State st;
  st.epoch = meta["sampler"]["epoch"].get<int64_t>();
  st.position = meta["sampler"]["position"].get<int64_t>();
  sampler_->set_state(st);

  int saved_world = meta.value("world_size", 0);
  if (saved_world == world_.size()) {
    std::map<std::string, at::Tensor> rng(c.group("rng").begin(), c.group("rng").end());
    auto cpu = rng.find(fmt::format("cpu.rank{}", world_.rank()));
    // A Generator is a handle: the copy sets the state of the default generator itself.
    if (cpu != rng.end()) {
      at::Generator g = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_state(cpu->second);
    }
    auto cuda = rng.find(fmt::format("cuda.rank{}", world_.rank()));
    if (world_.device().is_cuda() && cuda != rng.end()) {
      at::Generator g = at::globalContext().defaultGenerator(world_.device());
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_state(cuda->second);
    }
  } else {
    log::warn("resuming on {} ranks from a checkpoint written by {}: weights, optimizer, schedule and the sequence of "
              "global batches continue; random streams (dropout) restart from the seed",
              world_.size(), saved_world);
    at::manual_seed(uint64_t(recipe_.train.seed) + uint64_t(step_) * 1000003u + uint64_t(world_.rank()));
  }
}

std::string Trainer::resume_path() {
  const std::string& mode = recipe_.checkpoint.resume;
  auto pick_newest_good = [&](const std::string& dir, bool fallback) -> std::string {
    auto all = list_checkpoints(dir);
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      try {
        read_checkpoint(it->second);
        return it->second;
      } catch (const InputError& e) {
        if (!fallback) throw;
        log::warn("{}; trying the previous checkpoint", e.what());
      }
    }
    if (!all.empty())
      input_error("no usable checkpoint in {}: all {} are corrupt (set checkpoint.resume=none to start over)", dir,
                  all.size());
    return "";
  };
  std::string chosen, error;
  // Rank 0 chooses (reading every candidate once); the others follow, so all resume from one file.
  if (world_.is_root()) {
    try {
      if (mode == "auto") {
        chosen = pick_newest_good(ckpt_dir_, true);
      } else if (mode == "none") {
        // a fresh start
      } else if (fs::is_directory(mode)) {
        std::string dir = fs::is_directory(fs::path(mode) / "checkpoints") ? (fs::path(mode) / "checkpoints").string() : mode;
        chosen = pick_newest_good(dir, false);
        if (chosen.empty()) input_error("checkpoint.resume: no checkpoint in {}", mode);
      } else {
        read_checkpoint(mode);  // names the problem: missing, truncated, corrupt
        chosen = mode;
      }
      // A run directory holds one run: starting over in it, or continuing another run's checkpoint
      // there, would overwrite its checkpoints and logs, and a later `auto` could pick up a stale one.
      if (mode != "auto") {
        auto mine = list_checkpoints(ckpt_dir_);
        if (!mine.empty() && (chosen.empty() || !fs::equivalent(fs::path(chosen).parent_path(), ckpt_dir_)))
          input_error("key `checkpoint.resume`: `{}` would start a new run in {}, which holds the checkpoints of an "
                      "earlier run (newest: step {}); give another checkpoint.run_dir, or remove that directory",
                      mode, run_dir_, mine.back().first);
      }
    } catch (const InputError& e) {
      error = e.what();
    }
  }
  std::string verdict = all_gather_bytes(error.empty() ? "+" + chosen : "!" + error, comm_)[0];
  if (verdict[0] == '!') throw InputError(verdict.substr(1));
  return verdict.substr(1);
}

void Trainer::write_recipe() {
  if (!world_.is_root()) return;
  fs::create_directories(run_dir_);
  std::ofstream(fs::path(run_dir_) / "recipe.yaml") << recipe::to_yaml(recipe_.tree);
}

// ---- the loop ----

// The run's outcome as a Markdown table, for people (results.json holds the same numbers for
// programs): what ran, on how many ranks, for how long, and every eval metric.
std::string Trainer::results_table(const std::map<std::string, double>& eval, double seconds,
                                   int64_t resumed_from) const {
  std::string main = task_.main_metric();
  auto it = eval.find(main);
  std::string out = "| recipe | method | model | eval data | ranks | steps | train time | " + main + " |\n";
  out += "|---|---|---|---|---|---|---|---|\n";
  out += fmt::format("| {} | {} | {} | {} | {} | {}{} | {:.0f} s | {} |\n\n", recipe_.name, recipe_.method,
                     fs::path(recipe_.model.path).filename().string(),
                     recipe_.data.eval.empty() ? "-" : fs::path(recipe_.data.eval).filename().string(), world_.size(),
                     step_, resumed_from >= 0 ? fmt::format(" (resumed at {})", resumed_from) : "", seconds,
                     it == eval.end() ? "-" : fmt::format("{:.4f}", it->second));
  out += "| metric | value |\n|---|---|\n";
  for (auto& [k, v] : eval) out += fmt::format("| {} | {:.4f} |\n", k, v);
  return out;
}

FitResult Trainer::fit() {
  FitResult res;
  const std::string results_md = (fs::path(run_dir_) / "results.md").string();
  StopSignals signals;
  const auto started = std::chrono::steady_clock::now();
  // Trainable weights start equal on every rank even if a method's initialisation drew from
  // per-rank random streams.
  if (world_.size() > 1) {
    at::NoGradGuard ng;
    for (auto& [name, p] : params_) comm_.broadcast(p.data(), 0, "initial weights");
  }
  at::manual_seed(uint64_t(recipe_.train.seed) + uint64_t(world_.rank()));
  std::string from = resume_path();
  if (!from.empty()) {
    load_checkpoint(from);
    res.resumed_from = step_;
    log::info("resumed from {} at step {} of {}", from, step_, total_steps_);
    if (step_ >= total_steps_) {
      // Rerunning a finished command: evaluate what is there and rewrite nothing, so results.md
      // keeps the training run's own figures.
      log::info("the run in {} is already complete: evaluating its last checkpoint; nothing is rewritten", run_dir_);
      res.eval = evaluate();
      res.already_complete = true;
      res.step = step_;
      res.last_checkpoint = from;
      log::info("eval step {}:{}", step_, metrics_line(res.eval));
      if (world_.is_root() && fs::exists(results_md)) {
        std::stringstream table;
        table << std::ifstream(results_md).rdbuf();
        log::info("results of the training run ({}):\n{}", results_md, table.str());
      }
      return res;
    }
  }
  write_recipe();
  if (world_.is_root()) log_ = std::make_unique<RunLog>(run_dir_, res.resumed_from, recipe_.log.tensorboard);
  log::info("training {} steps: global batch {} = {} ranks x micro-batch {} x {} accumulation; {} examples/epoch",
            total_steps_, global_batch_, world_.size(), recipe_.train.micro_batch, accum_, sampler_->size());

  const TrainConfig& t = recipe_.train;
  Progress progress(total_steps_, step_, t.log_every, world_.is_root());
  int64_t last_saved = -1;
  auto save = [&] {
    res.last_checkpoint = (fs::path(ckpt_dir_) / checkpoint_name(step_)).string();
    save_checkpoint(res.last_checkpoint);
    last_saved = step_;
  };
  auto log_eval = [&](const std::map<std::string, double>& m) {
    if (m.empty()) return;
    progress.break_line();
    log::info("eval step {}:{}", step_, metrics_line(m));
    if (log_) {
      log_->write(step_, "eval", m);
      log_->flush();
    }
  };

  while (step_ < total_steps_) {
    double loss = train_step();
    ++step_;
    res.losses.push_back(loss);
    progress.step(step_, loss, last_tokens_, fmt::format("lr {:.3g}", last_lr_));
    if (log_ && (step_ % std::max<int64_t>(1, t.log_every) == 0 || step_ == total_steps_ || stop_)) {
      log_->write(step_, "train",
                  {{"loss", loss}, {"lr", last_lr_}, {"grad_norm", last_grad_norm_}, {"tokens", double(last_tokens_)},
                   {"epoch", double(sampler_->state().epoch) +
                                 double(sampler_->state().position) / double(sampler_->size())}});
      log_->flush();
    }
    if (stop_) {
      progress.break_line();
      log::warn("stop signal received: writing a checkpoint at step {} and exiting (code {})", step_, int(kExitPreempted));
      save();
      res.preempted = true;
      res.step = step_;
      return res;
    }
    if (t.eval_every > 0 && step_ % t.eval_every == 0 && step_ < total_steps_) log_eval(res.eval = evaluate());
    if (recipe_.checkpoint.every > 0 && step_ % recipe_.checkpoint.every == 0 && step_ < total_steps_) save();
  }
  progress.break_line();
  log_eval(res.eval = evaluate());
  if (last_saved != step_) save();
  if (world_.is_root()) {
    nlohmann::json j;
    j["step"] = step_;
    j["method"] = recipe_.method;
    j["main_metric"] = task_.main_metric();
    for (auto& [k, v] : res.eval) j["eval"][k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
    std::ofstream(fs::path(run_dir_) / "results.json") << j.dump(2) << '\n';
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::string table = results_table(res.eval, secs, res.resumed_from);
    std::ofstream(results_md) << table;
    log::info("results ({}):\n{}", results_md, table);
  }
  res.step = step_;
  return res;
}

}  // namespace kiln::train
