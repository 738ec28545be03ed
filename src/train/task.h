// A Task is one fine-tuning method seen from the trainer: it builds its model and data, turns a
// micro-batch into a summed loss, and turns gathered predictions into metrics. The trainer
// (src/train/trainer.h) owns everything else: the sampler, the optimizer, schedules, accumulation,
// gradient sync, checkpoints, signals, logs. A Task talks to other ranks only through the
// Communicator it is given in build() (e.g. to make its data stores together). Methods implement
// it in src/methods/<name>/ and register it there (src/methods/registry.h); the engine never names
// a method.
//
// A method that reads `kiln preprocess` stores returns its data::Encoder (the fields it stores per
// example and how a record becomes them) from encoder(), and usually derives from StoreTask
// (train/stores.h), which opens the stores and collates them into Batches of named tensors.
//
// Loss contract (DESIGN.md "Determinism"): loss() returns the SUM of per-target losses of its
// micro-batch and the number of targets. The trainer all-reduces the target count of the whole
// step (all ranks, all micro-batches) before backward and divides by it, so the step's loss does not
// depend on how targets fall across ranks and micro-batches.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/collate.h"
#include "data/schema.h"
#include "train/eval_records.h"

namespace torch::nn {
class Module;
}

namespace kiln {
struct Recipe;
namespace parallel {
class World;
class Communicator;
}  // namespace parallel
}  // namespace kiln

namespace kiln::train {

enum class Split { train, eval };

// An export as its users will find it: the folder's final path (it is written under a temporary
// name first) and its form.
struct ExportTarget {
  std::string folder;
  bool merged = false;  // false: a PEFT adapter
};

// How the Python tools users check kiln against (transformers, peft) reproduce an export, for its
// README.md (train/export_readme.h): the lines that load it, or why they cannot.
struct ExportUse {
  // Runnable Python that defines `model` from the variables `base` (the base model folder) and
  // `folder` (the export), given before it.
  std::string python;
  // The README then adds a `tokenizer` and a function that gives kiln's ids for the recipe's
  // records (encode(text, pair=None) for tsv/csv/sst/jsonl, encode_words(words) for CoNLL).
  bool encode = false;
  std::string example;         // after those: a short use of `model`
  std::string unreproducible;  // one line; non-empty: transformers and peft do not give kiln's outputs
};

struct LossSum {
  at::Tensor sum;       // scalar, the sum of per-target losses (requires grad in training)
  int64_t targets = 0;  // tokens for token-level losses, examples for classification
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

class Task {
 public:
  virtual ~Task() = default;

  // Loads the model (on world.device()), applies LoRA, adds heads, opens the data stores. Reads the
  // recipe's `task:` section (recipe::Section::root(recipe.tree).sub("task")) and calls
  // finish() on it; the defaults it fills in land in recipe.tree, so the saved recipe.yaml is
  // complete. Called on every rank; `comm` is the run's communicator (collective steps in build go
  // through it, under its watchdog).
  virtual void build(Recipe& recipe, parallel::World& world, parallel::Communicator& comm) = 0;
  // How this method stores its data (`kiln preprocess` and StoreTask use it); may be called before
  // build(). nullptr: the method reads no stores.
  virtual std::unique_ptr<data::Encoder> encoder(const Recipe& recipe) const { return nullptr; }

  // The parameters the optimizer trains, each by its Hugging Face / PEFT name, in an order that is
  // the same on every rank and every run (checkpoints and the optimizer state are keyed by it).
  virtual NamedTensors trainable() = 0;
  // Whether weight decay applies; the default exempts norms, biases and every 1-D tensor.
  virtual bool decays(const std::string& name, const at::Tensor& p) const;
  // Non-trainable state a checkpoint must also hold to resume exactly (e.g. running statistics).
  virtual NamedTensors extra_state() { return {}; }

  // Switches dropout etc. (training) on or off (evaluation).
  virtual void set_training(bool on) = 0;

  virtual int64_t size(Split s) const = 0;
  // Per-example lengths of the train split, for data.group_by_length; empty: no grouping.
  virtual std::vector<int64_t> lengths(Split s) const { return {}; }
  virtual data::Batch collate(Split s, const std::vector<int64_t>& indices) = 0;

  // The number of targets loss() will count on this batch, known before the forward pass (the
  // trainer all-reduces the step's total before backward). Default: batch.num_targets (set by the
  // method's collate).
  virtual int64_t targets(const data::Batch& batch) const { return batch.num_targets; }
  // Forward pass in training mode: summed loss of the micro-batch and its number of targets.
  virtual LossSum loss(const data::Batch& batch) = 0;
  // Forward pass without gradients on an eval micro-batch: appends one record per example to `out`
  // (out.add_example, then the method's own named columns) and returns the summed loss (a detached
  // scalar) with its number of targets.
  virtual LossSum evaluate(const data::Batch& batch, EvalRecords& out) = 0;
  // Metrics from the records of the whole eval split (gathered from all ranks, sorted by example);
  // called on every rank with identical input. "loss" is added by the trainer.
  virtual std::map<std::string, double> metrics(const EvalRecords& all) = 0;
  // What the method adds to the results of an evaluation, from its gathered records (rank 0 only):
  // files written into `dir` beside results.md (e.g. predictions as JSON lines), and Markdown
  // returned to be appended to results.md (e.g. a table per dataset and class). Default: nothing.
  virtual std::string write_results(const EvalRecords& all, const std::string& dir) { return ""; }
  // The metric that names the result in the results table and in logs (e.g. "accuracy", "span_f1").
  virtual std::string main_metric() const { return "loss"; }

  // Phases: a method that trains several models in one run (FRACTAL: its baselines, then a round on
  // pseudo-labels) names them in order; each phase is a whole training run in <run_dir>/<phase>
  // with its own checkpoints and results, and the run's results.md has a row per phase
  // (train/phases.h). Empty: one phase, the run itself.
  virtual std::vector<std::string> phases() const { return {}; }
  // Called on every rank before phase `name` trains, after the previous phase trained (or, on a
  // rerun, was loaded from its last checkpoint): set up the phase's model and targets. `comm` for
  // anything collective.
  virtual void begin_phase(const std::string& name, parallel::Communicator& comm) {}

  // Exports (rank 0, after training or from a loaded checkpoint). Default: InputError saying the
  // method cannot export that form.
  virtual void export_adapter(const std::string& dir);
  virtual void export_merged(const std::string& dir);
  // How an export of this method is used outside kiln. Default: not reproducible (a method says
  // otherwise only with the lines that do it, checked by a test).
  virtual ExportUse export_use(const ExportTarget& target) const;
  // Tokens processed by a micro-batch, for tokens/s in the progress line (default: attention mask sum).
  virtual int64_t tokens(const data::Batch& batch) const;
};

}  // namespace kiln::train
