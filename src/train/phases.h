// A run of a Task that trains in phases (Task::phases): each phase a Trainer of its own in
// <run_dir>/<phase>, in order, so a rerun skips the phases that are complete (their last checkpoint
// is loaded and evaluated) and resumes the one that was stopped. The run directory's results.md and
// results.json put the phases side by side.
#pragma once
#include <string>
#include <vector>

#include "train/trainer.h"

namespace kiln::train {

struct PhaseResult {
  std::string phase, run_dir;
  FitResult fit;
  double seconds = 0;  // this process's wall time in the phase
};

// Every phase of the task, in order. Stops after a phase that was pre-empted (its result says so).
// Collective.
std::vector<PhaseResult> fit_phases(const Recipe& recipe, Task& task, parallel::World& world,
                                    parallel::Communicator& comm);

// The table of phases for results.md: one row per phase, a column per metric.
std::string phases_table(const Recipe& recipe, const std::string& main_metric, const std::vector<PhaseResult>& phases,
                         int ranks);

}  // namespace kiln::train
