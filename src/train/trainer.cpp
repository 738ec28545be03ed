#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "core/progress.h"
#include "parallel/communicator.h"
#include "parallel/grad_sync.h"
#include "parallel/world.h"
#include "train/autocast.h"
#include "train/optimizer.h"
#include "train/task.h"
#include "train/zero1.h"
#include "train/run_log.h"
#include "train/schedule.h"
#include "train/signals.h"

#ifndef KILN_VERSION
#define KILN_VERSION "unknown"
#endif

namespace kiln::train {

namespace fs = std::filesystem;

std::string run_dir_of(const Recipe& r) {
  if (!r.checkpoint.run_dir.empty()) return r.checkpoint.run_dir;
  return (fs::path("checkpoints") / (r.name.empty() ? "run" : r.name)).string();
}

namespace {

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

Trainer::Trainer(const Recipe& recipe, Task& task, parallel::World& world, parallel::Communicator& comm)
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
  if (t.precision == "bf16" && world.device().is_cpu())
    if (const std::string note = bf16_cpu_note("train.precision: bf16"); !note.empty()) log::warn("{}", note);
  // The optimizer (moments, gradient buckets) is made by fit(): a trainer that only evaluates or
  // exports (kiln eval, kiln export) allocates no training state.
}

Trainer::~Trainer() = default;

void Trainer::setup_optimizer() {
  if (opt_) return;
  const TrainConfig& t = recipe_.train;
  std::vector<at::Tensor> tensors;
  std::vector<bool> decay;
  std::vector<std::string> names;
  for (auto& [name, p] : params_) {
    tensors.push_back(p);
    decay.push_back(task_.decays(name, p));
    names.push_back(name);
  }
  AdamWOptions o;
  o.lr = t.lr;
  o.beta1 = t.adam_beta1;
  o.beta2 = t.adam_beta2;
  o.eps = t.adam_eps;
  o.weight_decay = t.weight_decay;
  // Bucketed all-reduce overlapped with backward; Sum, since every rank's loss is already divided
  // by the global target count. With dist.zero1 the buckets are reduce-scattered into shards that
  // Zero1AdamW steps (AdamW's arithmetic on 1/N of the state per rank).
  if (world_.size() > 1)
    sync_ = std::make_unique<parallel::GradSync>(tensors, comm_, recipe_.dist, parallel::ReduceOp::Sum);
  if (recipe_.dist.zero1 && world_.size() > 1) {
    opt_ = std::make_unique<Zero1AdamW>(*sync_, decay, o, names);
    return;
  }
  std::vector<AdamW::Param> ps;
  for (size_t i = 0; i < params_.size(); ++i) ps.push_back({params_[i].first, params_[i].second, decay[i]});
  opt_ = std::make_unique<AdamW>(std::move(ps), o);
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

double Trainer::train_step() {
  const int64_t micro = recipe_.train.micro_batch;
  comm_.set_context(step_, "collate");
  std::vector<int64_t> mine = sampler_->next();
  std::vector<data::Batch> batches;
  std::vector<int64_t> batch_targets;  // asked once per micro-batch: a method may count on the device
  int64_t local_targets = 0;
  for (int64_t k = 0; k < accum_; ++k) {
    int64_t b = k * micro, e = std::min<int64_t>(int64_t(mine.size()), (k + 1) * micro);
    if (b >= e) break;
    batches.push_back(task_.collate(Split::train, std::vector<int64_t>(mine.begin() + b, mine.begin() + e)));
    batch_targets.push_back(task_.targets(batches.back()));
    local_targets += batch_targets.back();
  }
  at::Tensor count = scalar_tensor({double(local_targets)});
  comm_.all_reduce(count, parallel::ReduceOp::Sum, "target count");
  const double global_targets = count.item<double>();

  task_.set_training(true);
  // The loss sum stays on the device until the step's stats are reduced: no host sync per micro-batch.
  at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(world_.device()));
  int64_t tokens = 0;
  comm_.set_context(step_, "forward/backward");
  for (size_t k = 0; k < batches.size(); ++k) {
    const data::Batch& batch = batches[k];
    // Only the last micro-batch of this rank communicates; the others accumulate .grad locally.
    if (sync_) sync_->set_sync(k + 1 == batches.size());
    LossSum ls;
    {
      Autocast ac(recipe_.train.precision == "bf16", world_.device());
      ls = task_.loss(batch);
    }
    KILN_CHECK(ls.targets == batch_targets[k], "method counted {} targets, announced {}", ls.targets,
               batch_targets[k]);
    if (global_targets > 0) (ls.sum.to(at::kFloat) / global_targets).backward();
    loss_sum += ls.sum.detach().to(loss_sum.device(), at::kDouble);
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
    if (!sync_ || !sync_->sharded()) grads();  // a parameter the step's loss never reached steps with a zero gradient
    last_grad_norm_ = opt_->step(last_lr_, recipe_.train.max_grad_norm);
  } else {
    last_lr_ = schedule_->lr(step_);
    log::warn("step {}: no targets in the whole global batch; the step is skipped", step_ + 1);
  }
  for (auto& [name, p] : params_) p.mutable_grad() = at::Tensor();

  // Loss, tokens and the stop flag travel together: one small all-reduce per step.
  at::Tensor stats = scalar_tensor({loss_sum.item<double>(), double(tokens), StopSignals::requested() ? 1.0 : 0.0});
  comm_.all_reduce(stats, parallel::ReduceOp::Sum, "step stats");
  last_tokens_ = int64_t(stats[1].item<double>());
  tokens_seen_ += last_tokens_;
  stop_ = stats[2].item<double>() > 0;
  return global_targets > 0 ? stats[0].item<double>() / global_targets : 0.0;
}

std::map<std::string, double> Trainer::evaluate() {
  const int64_t n = task_.size(Split::eval);
  if (n == 0) return {};
  comm_.set_context(step_, "evaluation");
  task_.set_training(false);
  // Contiguous shares: rank r evaluates [n*r/N, n*(r+1)/N). The gather sorts by example index, so
  // the records, and every metric, are those of a single process.
  const int64_t r = world_.rank(), N = world_.size();
  const int64_t begin = n * r / N, end = n * (r + 1) / N;
  const int64_t micro = recipe_.train.eval_batch > 0 ? recipe_.train.eval_batch : recipe_.train.micro_batch;
  EvalRecords mine;
  {
    at::NoGradGuard ng;
    for (int64_t b = begin; b < end; b += micro) {
      std::vector<int64_t> idx;
      for (int64_t i = b; i < std::min(end, b + micro); ++i) idx.push_back(i);
      data::Batch batch = task_.collate(Split::eval, idx);
      LossSum ls;
      {
        Autocast ac(recipe_.train.precision == "bf16", world_.device());
        ls = task_.evaluate(batch, mine);
      }
      mine.loss_sum += ls.sum.defined() ? ls.sum.item<double>() : 0.0;
      mine.loss_count += ls.targets;
    }
  }
  task_.set_training(true);
  // Shares of a generation eval can take minutes more on one rank than on another.
  if (world_.size() > 1) comm_.barrier("end of evaluation", comm_.slow_work_timeout_s());
  EvalRecords all = gather_records(mine, comm_);
  records_ = all;
  auto m = task_.metrics(all);
  if (all.loss_count > 0) m["loss"] = all.loss_sum / double(all.loss_count);
  return m;
}

// ---- checkpoints ----

void Trainer::save_checkpoint(const std::string& path) {
  comm_.set_context(step_, "checkpoint");
  TrainingState st = state();
  CheckpointFile c = capture_checkpoint(st);
  if (world_.is_root()) {
    write_checkpoint(path, c);
    retention_->written(path);
    retention_->prune();
    log::info("checkpoint {} (step {})", path, step_);
  }
  // Nobody leaves (e.g. exits on a stop signal) before the file is complete.
  comm_.barrier("checkpoint written", comm_.slow_work_timeout_s());
}

TrainingState Trainer::state() {
  return TrainingState{recipe_, task_, world_, comm_, params_, opt_.get(), *sampler_, *schedule_, step_, global_batch_, tokens_seen_};
}

void Trainer::load_checkpoint(const std::string& path, bool weights_only) {
  comm_.set_context(step_, "reading the checkpoint");
  CheckpointFile c = read_checkpoint(path);
  // Each rank reads and verifies the whole file; on cold shared storage some take minutes longer
  // than others. The collectives of restoring it (and of the first step) have the short deadline,
  // so the slowest reader is waited for here, under the long one.
  if (world_.size() > 1) comm_.barrier("checkpoint read by every rank", comm_.slow_work_timeout_s());
  TrainingState st = state();
  restore_checkpoint(st, c, path, weights_only);
}

void Trainer::load_weights_of(const std::string& path) {
  const int64_t now = step_;
  load_checkpoint(path, /*weights_only=*/true);  // sets step_ to the checkpoint's
  step_ = now;
}

std::string Trainer::resume_path() { return choose_resume(recipe_, run_dir_, comm_, /*training=*/false); }

void Trainer::write_recipe() {
  if (!world_.is_root()) return;
  fs::create_directories(run_dir_);
  write_file_atomic((fs::path(run_dir_) / "recipe.yaml").string(), recipe::to_yaml(recipe_.tree));
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
  return out + metrics_table(eval);
}

void Trainer::write_results(const FitResult& res, double secs, int64_t resumed_from) {
  nlohmann::json j;
  j["step"] = step_;
  j["method"] = recipe_.method;
  j["main_metric"] = task_.main_metric();
  if (!res.eval.empty()) j["eval"] = metrics_json(res.eval);
  j.update(run_provenance(recipe_, world_.size()));  // where the figures come from, for `kiln report`
  j["tokens_seen"] = tokens_seen_;
  j["train_seconds"] = secs;  // of this process: a resumed run counts from its resume
  j["resumed_from"] = resumed_from;
  if (res.best_step >= 0)
    j["best"] = {{"metric", recipe_.checkpoint.keep_best}, {"step", res.best_step}, {"checkpoint", res.best_checkpoint}};
  std::string table = results_table(res.eval, secs, resumed_from);
  if (res.best_step >= 0 && res.best_step != step_)
    table += fmt::format("The figures are those of step {}, the best `{}` of the run's evaluations "
                         "(checkpoint.keep_best; {}).\n\n",
                         res.best_step, recipe_.checkpoint.keep_best, res.best_checkpoint);
  if (!res.eval.empty()) {
    std::string more = task_.write_results(records_, run_dir_);
    if (!more.empty()) table += "\n" + more;
  }
  // results.md last: its presence marks a run whose results are complete.
  write_file_atomic((fs::path(run_dir_) / "results.json").string(), j.dump(2) + "\n");
  write_file_atomic((fs::path(run_dir_) / "results.md").string(), table);
  log::info("results ({}):\n{}", (fs::path(run_dir_) / "results.md").string(), table);
}

FitResult Trainer::fit() {
  setup_optimizer();
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
  std::string from = choose_resume(recipe_, run_dir_, comm_, /*training=*/true);
  retention_ = std::make_unique<Retention>(ckpt_dir_, recipe_.checkpoint.keep);
  retention_->protect(from);  // never pruned: what this run stands on if its own checkpoints fail
  if (!from.empty()) {
    load_checkpoint(from);
    res.resumed_from = step_;
    log::info("resumed from {} at step {} of {}", from, step_, total_steps_);
    if (step_ >= total_steps_) {
      // Rerunning a finished command: evaluate what is there and rewrite nothing, so results.md
      // keeps the training run's own figures.
      log::info("the run in {} is already complete: evaluating its last checkpoint; nothing is rewritten", run_dir_);
      if (auto b = recipe_.checkpoint.keep_best.empty()
                       ? std::nullopt
                       : read_best(run_dir_, recipe_.checkpoint.keep_best, recipe_.checkpoint.best_mode);
          b && b->step != step_) {
        log::info("checkpoint.keep_best: the run ended on step {} ({} {:.6g}): evaluating {}", b->step, b->metric,
                  b->value, b->path);
        load_weights_of(b->path);
        res.best_step = b->step, res.best_checkpoint = b->path;
      }
      res.eval = evaluate();
      res.already_complete = true;
      res.step = step_;
      res.last_checkpoint = from;
      log::info("eval step {}:{}", step_, metrics_line(res.eval));
      if (world_.is_root() && fs::exists(results_md)) {
        std::stringstream table;
        table << std::ifstream(results_md).rdbuf();
        log::info("results of the training run ({}):\n{}", results_md, table.str());
      } else if (world_.is_root()) {
        // The first run ended before writing its results (a full disk): write what is missing.
        log::warn("the run in {} has its last checkpoint but no results: writing them from this evaluation", run_dir_);
        write_results(res, 0, res.resumed_from);
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
  const int64_t eval_every = t.eval_every == kEvalEveryEpoch ? sampler_->batches_per_epoch() : t.eval_every;
  // checkpoint.keep_best: every evaluation that beats the best so far (of this run, resumes
  // included: best.json) is saved and kept; the run ends on the best one's weights.
  const CheckpointConfig& cc = recipe_.checkpoint;
  std::optional<BestCheckpoint> best;
  if (!cc.keep_best.empty()) {
    best = read_best(run_dir_, cc.keep_best, cc.best_mode);
    if (best && world_.is_root()) retention_->set_best(best->path);
    if (eval_every <= 0)
      log::warn("checkpoint.keep_best is set but train.eval_every is 0: the only evaluation is the last, so the run "
                "ends on the last step");
  }
  auto consider = [&](const std::map<std::string, double>& m) {
    if (cc.keep_best.empty() || m.empty()) return;
    auto it = m.find(cc.keep_best);
    if (it == m.end()) {
      std::vector<std::string> names;
      for (const auto& [k, v] : m) names.push_back(k);
      input_error("{}: key `checkpoint.keep_best`: the evaluation gives no metric `{}` (it gives: {})", recipe_.file,
                  cc.keep_best, fmt::join(names, ", "));
    }
    if (best && !best->better(it->second)) return;
    if (last_saved != step_) save();
    best = BestCheckpoint{cc.keep_best, cc.best_mode, it->second, step_, res.last_checkpoint};
    if (world_.is_root()) {
      retention_->set_best(best->path);
      write_best(run_dir_, *best);
    }
    log::info("best {} so far: {:.6g} at step {} ({})", cc.keep_best, it->second, step_, best->path);
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
                  {{"loss", loss}, {"lr", last_lr_}, {"grad_norm", last_grad_norm_}, {"tokens", double(last_tokens_)}, {"tokens_seen", double(tokens_seen_)},
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
    if (eval_every > 0 && step_ % eval_every == 0 && step_ < total_steps_) {
      log_eval(res.eval = evaluate());
      consider(res.eval);
    }
    if (recipe_.checkpoint.every > 0 && step_ % recipe_.checkpoint.every == 0 && step_ < total_steps_ &&
        last_saved != step_)
      save();
  }
  progress.break_line();
  log_eval(res.eval = evaluate());
  consider(res.eval);
  if (last_saved != step_) save();
  if (best && best->step != step_) {
    // The weights of the best evaluation go back into the model, so that the results and the
    // adapter exported after training are the best step's (the HF Trainer's load_best_model_at_end).
    load_weights_of(best->path);
    res.eval = evaluate();
    log::info("checkpoint.keep_best: ending on step {} of {} (best {} {:.6g}; re-evaluated:{})", best->step, step_,
              best->metric, best->value, metrics_line(res.eval));
  }
  if (best) res.best_step = best->step, res.best_checkpoint = best->path;
  if (world_.is_root())
    write_results(res, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
                  res.resumed_from);
  res.step = step_;
  return res;
}

}  // namespace kiln::train
