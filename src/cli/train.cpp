// `kiln train R.yaml [key=value ...]`: builds the recipe's method on every rank and trains it.
// Exit codes: 0 done, 2 bad input, 1 internal failure, 3 stopped by SIGTERM/SIGUSR1 after writing a
// checkpoint (rerun the same command to continue: checkpoint.resume defaults to auto).
#include <filesystem>

#include "cli/verbs.h"
#include "core/config.h"
#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "parallel/communicator.h"
#include "parallel/world.h"
#include "cli/train_session.h"
#include "methods/registry.h"
#include "train/checkpoint.h"
#include "train/export_readme.h"
#include "train/phases.h"
#include "train/memory_plan.h"
#include "train/signals.h"
#include "train/trainer.h"

namespace kiln::cli {

namespace {
RecipeArgs g_train_args;
}

namespace {
Recipe read_session_recipe(const RecipeArgs& args, const std::string* checkpoint, bool base) {
  Recipe r = read_recipe(args.recipe, args.overrides);
  if (!checkpoint) return r;
  r.read_only = true;
  if (base) {
    r.checkpoint.resume = "none";
  } else {
    const std::string& where = checkpoint->empty() ? r.checkpoint.run_dir : *checkpoint;
    if (!std::filesystem::exists(where))
      input_error("{} does not exist: {} (train the recipe first, give --checkpoint FILE|RUN_DIR, or --base for the "
                  "untrained model)",
                  checkpoint->empty() ? "the recipe's run directory (checkpoint.run_dir)" : "--checkpoint", where);
    if (!checkpoint->empty()) r.checkpoint.resume = *checkpoint;
  }
  return r;
}
}  // namespace

Session::Session(const RecipeArgs& args) : Session(args, read_session_recipe(args, nullptr, false), true) {}

Session::Session(const RecipeArgs& args, const std::string& checkpoint, bool base)
    : Session(args, read_session_recipe(args, &checkpoint, base), false) {}

Session::Session(const RecipeArgs& args, Recipe r, bool training)
    : recipe(std::move(r)), world(parallel::World::get()) {
  std::string level = args.log_level != "info" ? args.log_level : recipe.log.level;
  log::setup(world.rank(), world.size(), args.log_all_ranks || recipe.log.all_ranks, log::parse_level(level));
  world.configure_threads(int(recipe.train.threads));
  std::string layout = world.describe_layout();  // collective: every rank takes part
  log::info("kiln: {} rank(s)\n{}", world.size(), layout);
  comm = parallel::make_communicator(recipe.dist, world);
  if (world.size() > 1) log::info("communicator: {}", comm->backend());
  task = methods::make_task(recipe);
  if (training) {
    train::advise_on_bare_mpirun(world.is_root());
    train::check_memory_plan(recipe, world.size(), world.local_size(), world.device(), world.is_root());
    // A run directory that cannot be made fails here, naming its key, not later in a writer.
    for (auto [key, dir] : {std::pair<const char*, const std::string*>{"checkpoint.run_dir", &recipe.checkpoint.run_dir},
                            {"data.store_dir", &recipe.data.store_dir}}) {
      std::error_code ec;
      std::filesystem::create_directories(*dir, ec);
      if (ec || !std::filesystem::is_directory(*dir))
        input_error("{}: key `{}`: cannot create {} ({})", recipe.file, key, *dir,
                    ec ? ec.message() : "a file of that name exists");
    }
  }
  // Identical initial weights (LoRA, heads) on every rank; the trainer broadcasts rank 0's anyway.
  at::manual_seed(uint64_t(recipe.train.seed));
  task->build(recipe, world, *comm);
}

Session::~Session() = default;

int run_train(const RecipeArgs& args) {
  Session s(args);
  train::FitResult res;
  std::string run_dir = train::run_dir_of(s.recipe);
  if (s.task->phases().empty()) {
    train::Trainer trainer(s.recipe, *s.task, s.world, *s.comm);
    res = trainer.fit();
    if (res.preempted) {
      log::warn("stopped at step {} of {}; checkpoint {}; run the same command again to continue", res.step,
                trainer.total_steps(), res.last_checkpoint);
      return kExitPreempted;
    }
  } else {
    auto phases = train::fit_phases(s.recipe, *s.task, s.world, *s.comm);
    res = phases.back().fit;
    if (res.preempted) {
      log::warn("phase {} stopped at step {}; checkpoint {}; run the same command again to continue",
                phases.back().phase, res.step, res.last_checkpoint);
      return kExitPreempted;
    }
  }
  std::string dir = (std::filesystem::path(run_dir) / "adapter").string();
  if (s.recipe.checkpoint.export_adapter && s.recipe.lora.enabled && s.world.is_root() &&
      !(res.already_complete && std::filesystem::exists(dir))) {
    // Complete or absent, so that a rerun after a failed export writes it again. An adapter left by
    // an earlier run in this directory is renamed, not overwritten.
    if (std::filesystem::exists(dir)) log::warn("{} existed: kept as {}", dir, train::move_aside(dir, "old"));
    write_dir_atomic(dir, [&](const std::string& tmp) {
      s.task->export_adapter(tmp);
      train::write_export_readme(tmp, {dir, false}, s.recipe, *s.task, res.step, run_dir);
    });
    log::info("adapter written to {}", dir);
  }
  if (!res.eval.empty()) {
    auto it = res.eval.find(s.task->main_metric());
    if (it != res.eval.end()) log::info("final {} = {:.4f} (step {})", it->first, it->second, res.step);
  }
  return kExitOk;
}

void add_train(CLI::App& app, Action& action) {
  auto* sub = app.add_subcommand("train", "Train the recipe's method: checkpoints, evaluation, logs in the run directory");
  g_train_args.add_to(sub);
  sub->footer(
      "Exit codes: 0 done, 2 bad input, 1 internal error, 3 stopped by SIGTERM/SIGUSR1 after a checkpoint.\n"
      "Resume: rerun the same command (checkpoint.resume=auto), or checkpoint.resume=<file|run dir>|none.");
  sub->callback([&action] { action = [] { return run_train(g_train_args); }; });
}

}  // namespace kiln::cli
