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
  // training: print the memory plan and refuse a run that cannot fit, before the model is loaded.
  explicit Session(const RecipeArgs& args, bool training = false);
  ~Session();
  Recipe recipe;
  parallel::World& world;
  std::unique_ptr<parallel::Communicator> comm;
  std::unique_ptr<train::Task> task;
};

}  // namespace kiln::cli
