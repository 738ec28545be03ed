// Each verb of `kiln <verb>` lives in its own file and registers itself here: it adds its
// subcommand (options, --help text) to the app and sets `action`, which main() runs after parsing.
// An action returns the exit code; it throws kiln::InputError (exit 2) or other errors (exit 1).
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace kiln::parallel {
class World;
}

namespace kiln::cli {

using Action = std::function<int()>;

// The arguments shared by the verbs that take a recipe: `kiln train R.yaml a.b=1 c=2`.
struct RecipeArgs {
  std::string recipe;
  std::vector<std::string> overrides;
  bool log_all_ranks = false;
  std::string log_level = "info";
  void add_to(CLI::App* sub, bool recipe_required = true);
};

// The World of a verb whose ranks do CPU-only work (preprocessing, tokenizer statistics): they need
// no GPU of their own, so more ranks than GPUs on a node is fine, unless KILN_DEVICE says otherwise.
parallel::World& world_for_cpu_work();

void add_version(CLI::App& app, Action& action);
void add_recipe(CLI::App& app, Action& action);
void add_train(CLI::App& app, Action& action);
void add_eval(CLI::App& app, Action& action);
void add_preprocess(CLI::App& app, Action& action);
void add_export(CLI::App& app, Action& action);
void add_generate(CLI::App& app, Action& action);
void add_report(CLI::App& app, Action& action);
void add_tokenizer(CLI::App& app, Action& action);
void add_import(CLI::App& app, Action& action);

}  // namespace kiln::cli
