// What `kiln train` and `kiln eval` share: the recipe, logging, threads, the communicator and the
// method built on every rank.
#pragma once
#include <memory>

#include "cli/verbs.h"
#include "core/config.h"

namespace kiln::parallel {
class World;
class Communicator;
}  // namespace kiln::parallel
namespace kiln::train {
class Task;
}

namespace kiln::cli {

struct Session {
  // Training: print the memory plan and refuse a run that cannot fit, before the model is loaded;
  // make the run directory.
  explicit Session(const RecipeArgs& args);
  // Reading a trained run (kiln eval, export): `checkpoint` (a file or run directory; "" for the
  // recipe's run directory) must exist before anything is built, or, with `base`, no checkpoint is
  // read; checkpoint.resume is set to it, and nothing is written into the run directory.
  Session(const RecipeArgs& args, const std::string& checkpoint, bool base);
  ~Session();
  Recipe recipe;
  parallel::World& world;
  std::unique_ptr<parallel::Communicator> comm;
  std::unique_ptr<train::Task> task;

 private:
  Session(const RecipeArgs& args, Recipe r, bool training);
};

}  // namespace kiln::cli
