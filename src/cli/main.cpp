// kiln <verb> [recipe] [key=value ...]: the one entry point. Exit codes: 0 success, 2 bad input or
// usage, 1 internal failure, 3 stopped by SIGTERM/SIGUSR1 after writing a checkpoint.
#include <cstdlib>
#include <iostream>

#include "cli/verbs.h"
#include "methods/registry.h"
#include "core/error.h"
#include "core/host_memory.h"
#include "core/log.h"
#include "parallel/world.h"

namespace kiln::cli {

parallel::World& world_for_cpu_work() {
  setenv("KILN_DEVICE", "cpu", /*overwrite=*/0);
  return parallel::World::get();
}

void RecipeArgs::add_to(CLI::App* sub, bool recipe_required) {
  auto* opt = sub->add_option("recipe", recipe, "The YAML recipe");
  if (recipe_required) opt->required();
  sub->add_option("overrides", overrides, "Overrides of recipe keys: section.key=value (e.g. train.lr=2e-4)");
  sub->add_flag("--log-all-ranks", log_all_ranks, "Log from every rank, not only rank 0");
  sub->add_option("--log-level", log_level, "debug | info | warn | error")->capture_default_str();
}

namespace {

int world_size() { return kiln::parallel::running_rank_and_size().second; }

std::string rank_tag() {
  auto [rank, size] = kiln::parallel::running_rank_and_size();
  if (size <= 1) return "";
  return " (rank " + std::to_string(rank) + ")";
}

// A rank that fails after MPI is up may leave the others waiting in a collective: end the whole
// job now, with this rank's exit code, instead of waiting for their watchdogs.
void end_job(int code) {
  if (world_size() > 1) kiln::parallel::World::get().abort(code);
}

}  // namespace
}  // namespace kiln::cli

int main(int argc, char** argv) {
  using namespace kiln;
  tune_host_allocator();
  CLI::App app{"kiln: fine-tune LLaMA-family models data-parallel over MPI/NCCL.\n"
               "Run `kiln <verb> --help` for the options of a verb."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("kiln ") + KILN_VERSION);
  cli::Action action;
  cli::add_version(app, action);
  // Verbs register in the order `kiln --help` lists them.
  cli::add_recipe(app, action);
  cli::add_preprocess(app, action);
  cli::add_train(app, action);
  cli::add_eval(app, action);
  cli::add_export(app, action);
  cli::add_generate(app, action);
  cli::add_report(app, action);
  cli::add_tokenizer(app, action);
  cli::add_import(app, action);
  methods::add_verbs(app, action);  // the methods' own (kiln lep ...)
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help or the usage error
    return code == 0 ? kExitOk : kExitInput;
  }
  int code = kExitOk;
  try {
    return action ? action() : kExitOk;
  } catch (const Error& e) {
    // Logging may not be set up yet (a recipe error comes before the rank is known).
    std::cerr << "kiln: error" << cli::rank_tag() << ": " << e.what() << std::endl;
    code = e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "kiln: internal error" << cli::rank_tag() << ": " << e.what() << std::endl;
    code = kExitInternal;
  }
  cli::end_job(code);
  return code;
}
