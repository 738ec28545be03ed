// What `kiln train` and `kiln eval` share: the recipe, logging, threads, the communicator and the
// method built on every rank.
#pragma once
#include <memory>

#include "cli/verbs.h"
#include "core/config.h"

namespace kiln::dist {
class World;
class Communicator;
}  // namespace kiln::dist
namespace kiln::methods {
class Task;
}

namespace kiln::cli {

struct Session {
  explicit Session(const RecipeArgs& args);
  ~Session();
  Recipe recipe;
  dist::World& world;
  std::unique_ptr<dist::Communicator> comm;
  std::unique_ptr<methods::Task> task;
};

}  // namespace kiln::cli
