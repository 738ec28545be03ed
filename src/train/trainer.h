// The training loop, generic over a Task. One step (see Trainer::train_step):
//   sampler -> this rank's slice of the global batch -> micro-batches -> all-reduce the step's target
//   count -> per micro-batch forward + backward of (loss sum / global targets) -> gradient sum over
//   ranks -> global-norm clipping -> AdamW at the scheduled learning rate -> stop flag and loss
//   all-reduced together -> log, evaluate, checkpoint.
// Every rank runs the same steps; rank 0 writes logs and checkpoints.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "data/sampler.h"
#include "train/checkpoint.h"
#include "train/eval_records.h"

namespace kiln::parallel {
class World;
class Communicator;
class GradSync;
}  // namespace kiln::parallel

namespace kiln::train {

class Optimizer;
class RunLog;
class Schedule;
class Task;

struct FitResult {
  int64_t step = 0;                       // optimizer steps done (including those before a resume)
  int64_t resumed_from = -1;              // step of the checkpoint resumed from; -1: fresh start
  bool preempted = false;                 // stopped by SIGTERM/SIGUSR1 after writing a checkpoint
  bool already_complete = false;          // resumed at the last step: evaluated only, nothing written
  std::vector<double> losses;             // training loss of each step this process ran
  std::map<std::string, double> eval;     // the last evaluation (empty if none)
  std::string last_checkpoint;
  int64_t best_step = -1;                 // checkpoint.keep_best: the step whose weights the run ended on
  std::string best_checkpoint;
};

// The run directory (docs/train.md): recipe.yaml, metrics.jsonl, tb/, checkpoints/, adapter/, results.json.
std::string run_dir_of(const Recipe& r);

class Trainer {
 public:
  // The task must be built. `comm` carries gradients, counts and gathers.
  Trainer(const Recipe& recipe, Task& task, parallel::World& world, parallel::Communicator& comm);
  ~Trainer();

  FitResult fit();
  // Evaluates the whole eval split: every rank evaluates its contiguous share, the records are
  // gathered and sorted by example, and Task::metrics runs on all of them. Collective.
  std::map<std::string, double> evaluate();
  // Gathered records of the last evaluate() (identical on every rank).
  const EvalRecords& last_records() const { return records_; }

  void save_checkpoint(const std::string& path);  // collective; rank 0 writes
  // Every rank reads. weights_only: for evaluation and export (restore_checkpoint).
  void load_checkpoint(const std::string& path, bool weights_only = false);
  // A checkpoint's weights (checkpoint.keep_best's best), the step staying where the run is.
  void load_weights_of(const std::string& path);
  // The checkpoint `checkpoint.resume` names ("" for none), for evaluation and export: choose_resume
  // (train/checkpoint.h) without changing the run directory. fit() chooses for training.
  std::string resume_path();

  int64_t step() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  int64_t accumulation() const { return accum_; }
  const std::string& run_dir() const { return run_dir_; }

 private:
  double train_step();
  void setup_optimizer();
  std::vector<at::Tensor> grads();
  void write_recipe();
  TrainingState state();
  void write_results(const FitResult& res, double secs, int64_t resumed_from);  // rank 0
  std::string results_table(const std::map<std::string, double>& eval, double seconds, int64_t resumed_from) const;

  const Recipe& recipe_;
  Task& task_;
  parallel::World& world_;
  parallel::Communicator& comm_;
  std::string run_dir_, ckpt_dir_;
  int64_t global_batch_ = 0, accum_ = 1, total_steps_ = 0, warmup_ = 0, step_ = 0;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::unique_ptr<parallel::GradSync> sync_;   // more than one rank
  std::unique_ptr<Optimizer> opt_;         // AdamW, or Zero1AdamW with dist.zero1 on more than one rank
  std::unique_ptr<Schedule> schedule_;
  std::unique_ptr<data::Sampler> sampler_;
  std::unique_ptr<RunLog> log_;
  std::unique_ptr<Retention> retention_;   // rank 0
  EvalRecords records_;
  double last_grad_norm_ = 0, last_lr_ = 0;
  int64_t last_tokens_ = 0, tokens_seen_ = 0;
  bool stop_ = false;
};

}  // namespace kiln::train
