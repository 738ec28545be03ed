// `kiln eval R.yaml [key=value ...] [--checkpoint FILE|RUN_DIR] [--base]`: evaluates trained weights
// on the recipe's eval split across all ranks (metrics from gathered predictions) and prints them as
// JSON on stdout. Without --checkpoint: the newest good checkpoint of the recipe's run directory
// (of each phase's, for a method that trains in phases).
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/train_session.h"
#include "core/error.h"
#include "core/log.h"
#include "parallel/world.h"
#include "train/run_log.h"
#include "train/task.h"
#include "train/trainer.h"

namespace kiln::cli {

namespace {
RecipeArgs g_eval_args;
std::string g_checkpoint;
bool g_base = false;

// Evaluates the checkpoint `recipe` resolves to; its JSON on rank 0.
nlohmann::json evaluate(Session& s, const Recipe& recipe) {
  train::Trainer trainer(recipe, *s.task, s.world, *s.comm);
  // --base evaluates the model as built: no checkpoint is chosen (nor refused).
  std::string from = g_base ? std::string() : trainer.resume_path();
  if (from.empty() && !g_base)
    input_error("no checkpoint to evaluate in {} (give --checkpoint, or --base for the untrained model)",
                trainer.run_dir());
  if (!from.empty()) trainer.load_checkpoint(from, /*weights_only=*/true);
  auto m = trainer.evaluate();
  nlohmann::json j;
  j["checkpoint"] = from;
  j["step"] = trainer.step();
  j["main_metric"] = s.task->main_metric();
  if (!m.empty()) j["metrics"] = train::metrics_json(m);
  return j;
}

int run_eval() {
  Session s(g_eval_args);
  if (!g_checkpoint.empty()) s.recipe.checkpoint.resume = g_checkpoint;
  if (g_base) s.recipe.checkpoint.resume = "none";
  nlohmann::json out;
  if (s.task->phases().empty() || !g_checkpoint.empty() || g_base) {
    out = evaluate(s, s.recipe);
  } else {
    // A method that trains in phases: each phase's newest checkpoint in <run_dir>/<phase>.
    for (const std::string& phase : s.task->phases()) {
      Recipe r = s.recipe;
      r.checkpoint.run_dir = (std::filesystem::path(train::run_dir_of(s.recipe)) / phase).string();
      s.task->begin_phase(phase, *s.comm);
      out["phases"][phase] = evaluate(s, r);
    }
  }
  if (s.world.is_root()) std::cout << out.dump(2) << std::endl;
  return kExitOk;
}
}  // namespace

void add_eval(CLI::App& app, Action& action) {
  auto* sub = app.add_subcommand("eval", "Evaluate a checkpoint on the recipe's eval split; prints metrics as JSON");
  g_eval_args.add_to(sub);
  sub->add_option("--checkpoint", g_checkpoint, "Checkpoint file or run directory (default: the recipe's run directory)");
  sub->add_flag("--base", g_base, "Evaluate the model as built, without loading a checkpoint (a baseline)");
  sub->callback([&action] { action = [] { return run_eval(); }; });
}

}  // namespace kiln::cli
