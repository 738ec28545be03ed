// `kiln eval R.yaml [key=value ...] [--checkpoint FILE|RUN_DIR] [--base] [--out DIR]`: evaluates
// trained weights on the recipe's eval split across all ranks (metrics from gathered predictions)
// and prints them as JSON on stdout. Without --checkpoint: the newest good checkpoint of the
// recipe's run directory (of each phase's, for a method that trains in phases). --out DIR also
// writes metrics.json, results.md and the method's own files (e.g. predictions) into a new DIR.
#include <filesystem>
#include <fstream>
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
std::string g_checkpoint, g_out;
bool g_base = false;

// The evaluation's files in --out DIR (rank 0): the metrics, and what the method adds.
void write_out(Session& s, const train::Trainer& trainer, const nlohmann::json& j,
               const std::map<std::string, double>& m, const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  std::ofstream(fs::path(dir) / "metrics.json") << j.dump(2) << '\n';
  const std::string main = s.task->main_metric(), from = j["checkpoint"].get<std::string>();
  auto it = m.find(main);
  std::string md = fmt::format("| recipe | checkpoint | ranks | {} |\n|---|---|---|---|\n", main);
  md += fmt::format("| {} | {} | {} | {} |\n\n", s.recipe.name, from.empty() ? "(base model)" : from, s.world.size(),
                    it == m.end() ? "-" : fmt::format("{:.4f}", it->second));
  md += train::metrics_table(m);
  std::string more = s.task->write_results(trainer.last_records(), dir);
  if (!more.empty()) md += "\n" + more;
  std::ofstream(fs::path(dir) / "results.md") << md;
  log::info("evaluation written to {}", dir);
}

// Evaluates the checkpoint `recipe` resolves to; its JSON on rank 0.
nlohmann::json evaluate(Session& s, const Recipe& recipe, const std::string& out_dir) {
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
  if (!out_dir.empty() && s.world.is_root()) write_out(s, trainer, j, m, out_dir);
  return j;
}

int run_eval() {
  if (!g_out.empty() && std::filesystem::exists(std::filesystem::path(g_out) / "results.md"))
    input_error("--out {}: it already holds results.md (choose a new directory; nothing is overwritten)", g_out);
  Session s(g_eval_args, g_checkpoint, g_base);
  nlohmann::json out;
  if (s.task->phases().empty() || !g_checkpoint.empty() || g_base) {
    out = evaluate(s, s.recipe, g_out);
  } else {
    // A method that trains in phases: each phase's newest checkpoint in <run_dir>/<phase>.
    for (const std::string& phase : s.task->phases()) {
      Recipe r = s.recipe;
      r.checkpoint.run_dir = (std::filesystem::path(train::run_dir_of(s.recipe)) / phase).string();
      s.task->begin_phase(phase, *s.comm);
      out["phases"][phase] = evaluate(s, r, g_out.empty() ? g_out : (std::filesystem::path(g_out) / phase).string());
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
  sub->add_option("--out", g_out, "Also write metrics.json, results.md and the method's files (predictions) into this new directory");
  sub->add_flag("--base", g_base, "Evaluate the model as built, without loading a checkpoint (a baseline)");
  sub->callback([&action] { action = [] { return run_eval(); }; });
}

}  // namespace kiln::cli
