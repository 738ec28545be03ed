// README.md of an export folder (a PEFT adapter or a merged model), so that whoever finds the folder
// knows what it is and how to get kiln's outputs from it in Python: the method, recipe and base
// model, the commits that trained and exported it, the lines that load it (Task::export_use), the
// tokenization kiln used, and the run's evaluation of the exported step. An export that transformers
// and peft cannot reproduce says so in its README and in one warning line of the log.
#pragma once
#include <cstdint>
#include <string>

#include "train/task.h"

namespace kiln::train {

// Writes `dir`/README.md (`dir` is the folder being written; target.folder the name users will see)
// and returns the task's ExportUse. `step`: the exported checkpoint's; `run_dir`: where the run's
// results.json is (its figures are quoted when they are of that step).
ExportUse write_export_readme(const std::string& dir, const ExportTarget& target, const Recipe& recipe, const Task& task,
                              int64_t step, const std::string& run_dir);

}  // namespace kiln::train
