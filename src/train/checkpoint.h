// Checkpoints: what a training checkpoint holds and how it goes back in (capture / restore), which
// one a run resumes from (choose_resume), and the file format below them.
//
// Files: HDF5, one group per kind of state (weights, optimizer, rng, ...) holding tensors
// by name, plus string attributes (JSON metadata, the resolved recipe). A SHA-256 over every
// tensor's name, dtype, shape and bytes and every attribute is stored in the file (it names the
// contents); the file is sealed (core/h5.h write_sealed): a SHA-256 of all its bytes, checked before
// HDF5 parses it, so a flipped byte is an error, never a crash or a silently different model, and
// a file from before kiln sealed checkpoints reads as corrupt. Writes go to a temporary
// name, are flushed and fsynced, then renamed: a crash mid-write never leaves a file under the
// final name.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln {
struct Recipe;
namespace data {
class Sampler;
}
namespace parallel {
class World;
class Communicator;
}  // namespace parallel
}  // namespace kiln

namespace kiln::train {

class Task;
class Optimizer;
class Schedule;

using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

struct CheckpointFile {
  std::map<std::string, TensorList> groups;       // group -> tensors (any dtype, any shape, CPU)
  std::map<std::string, std::string> attrs;       // e.g. meta (JSON), recipe (YAML)

  const TensorList& group(const std::string& name) const;  // InputError naming the file if absent
  std::string sha256() const;                     // over the contents, in a canonical order
};

// Tensors are copied to CPU and made contiguous. Throws InternalError on I/O failure.
void write_checkpoint(const std::string& path, const CheckpointFile& c);
// Verifies the checksum. InputError (one line, naming the file) when the file is missing, truncated,
// not a checkpoint, or its contents do not match their checksum.
CheckpointFile read_checkpoint(const std::string& path);

// <run_dir>/checkpoints/step-<step, 8 digits>.h5
std::string checkpoint_name(int64_t step);
// Complete checkpoints in a directory (temporary files ignored), by step, oldest first.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir);
// Renames `path` to <path>.<suffix> (or .<suffix>.1, .2, ... if taken), so it is neither listed nor
// lost; returns the new name. InputError when the rename fails.
std::string move_aside(const std::string& path, const std::string& suffix);

// Which checkpoints a run keeps (rank 0): the newest `keep` that verify (keep <= 0: all, unread), and,
// whatever `keep` says, the one the run resumed from. Corrupt files met on the way are renamed
// *.corrupt with a warning and never counted, so a run of corrupt files cannot push out the good
// ones. A file is read in full to verify it at most once per process; the ones this process wrote
// are taken as verified.
class Retention {
 public:
  Retention(std::string dir, int64_t keep) : dir_(std::move(dir)), keep_(keep) {}
  void protect(const std::string& path);  // never deleted (the checkpoint resumed from)
  void set_best(const std::string& path);  // never deleted while it is the best (checkpoint.keep_best)
  void written(const std::string& path);  // written and fsynced by this process: good
  void prune();

 private:
  std::string dir_;
  int64_t keep_;
  std::vector<std::string> protected_, good_;
  std::string best_;
};

// checkpoint.keep_best: the best evaluation of a run so far and its checkpoint, kept in
// <run_dir>/best.json so that a resumed run compares against it and `kiln eval` / `kiln export`
// take it.
struct BestCheckpoint {
  std::string metric, mode;  // mode: min | max
  double value = 0;
  int64_t step = -1;
  std::string path;
  bool better(double v) const { return step < 0 || (mode == "min" ? v < value : v > value); }
};
// The run's record when it exists, names this metric and mode and its checkpoint is still there.
std::optional<BestCheckpoint> read_best(const std::string& run_dir, const std::string& metric, const std::string& mode);
void write_best(const std::string& run_dir, const BestCheckpoint& b);  // atomically

// The parts of a training run a checkpoint saves and restores (references into the trainer):
// trainable weights (group `weights`), the optimizer's full state (`optimizer`), the task's extra
// state (`extra`), every rank's RNG states (`rng`), and as JSON (`meta`): step, schedule, sampler
// position, world size, batch sizes, seed; the resolved recipe (`recipe`).
struct TrainingState {
  const Recipe& recipe;
  Task& task;
  parallel::World& world;
  parallel::Communicator& comm;
  const TensorList& params;
  Optimizer* optimizer;  // null in a trainer that only evaluates or exports (no training state)
  data::Sampler& sampler;
  const Schedule& schedule;
  int64_t& step;
  int64_t global_batch;
  int64_t& tokens_seen;  // tokens trained on so far (all ranks), for curves against tokens
};

// Collective (RNG states and a sharded optimizer's state are gathered); the result is complete on
// rank 0.
CheckpointFile capture_checkpoint(TrainingState& s);
// Every rank, with the file every rank read. InputError naming the file when it belongs to another
// method, global batch or parameter set. The optimizer load is collective for a sharded optimizer.
// weights_only (evaluation, export): the weights, the task's extra state and the step; nothing of
// the training state, so any number of ranks and any batch size may load it.
void restore_checkpoint(TrainingState& s, const CheckpointFile& c, const std::string& path, bool weights_only = false);

// The checkpoint `checkpoint.resume` names ("" for a fresh start). auto: the newest in
// <run_dir>/checkpoints that verifies, skipping (with a warning) corrupt ones; a file; a run or
// checkpoints directory. A run directory holds one run: resume=none (or another run's checkpoint)
// where checkpoints exist is refused, and so is an older checkpoint of this run while newer ones
// exist, unless checkpoint.rewind. Collective: rank 0 chooses, every rank gets its choice or its
// InputError.
// training: the choice may change the run directory: corrupt checkpoints skipped by `auto` are
// renamed *.corrupt, and a rewind moves the newer checkpoints, results and metrics into
// <run_dir>/rewound-<step>-<time>/. Otherwise (evaluation) nothing is written.
std::string choose_resume(const Recipe& r, const std::string& run_dir, parallel::Communicator& comm, bool training);

}  // namespace kiln::train
