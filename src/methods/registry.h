// Method name (the recipe's `method:`) -> a new Task: the one list of methods. Each method registers
// itself from its own .cpp with KILN_REGISTER_TASK; kiln_methods is an OBJECT library, so the
// registrars are linked into every binary that links it (a static archive would silently drop them).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "train/task.h"

namespace kiln {
struct Recipe;
}
namespace CLI {
class App;
}

namespace kiln::methods {

using train::Task;
using TaskFactory = std::function<std::unique_ptr<Task>()>;

// Returns true so it can initialise a static; throws InternalError on a duplicate name.
bool register_task(const std::string& name, const std::string& description, TaskFactory factory);
// InputError "<where>: key `method`: unknown method ..." naming the known methods (and the closest
// one) when `name` is not registered. `where`: the recipe's file:line of the key.
std::unique_ptr<Task> make_task(const std::string& name, const std::string& where = "");
// make_task for the recipe's `method:`, with the error naming where the recipe set it.
std::unique_ptr<Task> make_task(const Recipe& r);
bool has_task(const std::string& name);
// (name, description) of every registered method, sorted by name.
std::vector<std::pair<std::string, std::string>> list_tasks();

// A method's own command-line verb (`kiln lep init ...`), for the steps of a method that are not
// training (LEP's initialisation, propagation): `setup` adds options and subcommands to `sub` and
// sets `action` (run after parsing; returns the exit code) from their callbacks. main() adds every
// registered verb after the engine's own.
using VerbSetup = std::function<void(CLI::App* sub, std::function<int()>& action)>;
bool register_verb(const std::string& name, const std::string& description, VerbSetup setup);
void add_verbs(CLI::App& app, std::function<int()>& action);

}  // namespace kiln::methods

#define KILN_REGISTER_VERB(name, description, setup) \
  static const bool KILN_TASK_CONCAT(kiln_verb_registered_, __LINE__) = ::kiln::methods::register_verb(name, description, setup)

#define KILN_TASK_CONCAT2(a, b) a##b
#define KILN_TASK_CONCAT(a, b) KILN_TASK_CONCAT2(a, b)
// KILN_REGISTER_TASK("ls_llama", "label-supervised LLaMA", LsLlamaTask);  at namespace scope in a .cpp
#define KILN_REGISTER_TASK(name, description, Class)                                            \
  static const bool KILN_TASK_CONCAT(kiln_task_registered_, __LINE__) =                         \
      ::kiln::methods::register_task(name, description, [] { return std::make_unique<Class>(); })
