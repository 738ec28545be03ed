// `kiln lep ...`: the steps of LEP that are not training runs.
//   kiln lep init --model DIR --tokenizer TOK --out DIR   embeddings for a new vocabulary (lep_init.h)
// Planned (issue 16): propagate, and the evaluation harness.
#include <CLI/CLI.hpp>

#include <filesystem>

#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "methods/lep/lep_init.h"
#include "methods/registry.h"

namespace kiln::lep {
namespace {

struct InitArgs {
  std::string model, tokenizer, out;
} g_init;

int run_init() {
  log::setup(0, 1, false, log::Level::info);
  if (std::filesystem::exists(g_init.out)) input_error("--out {}: exists (kiln lep init never overwrites)", g_init.out);
  InitCounts c;
  write_dir_atomic(g_init.out, [&](const std::string& tmp) { c = init_model(g_init.model, g_init.tokenizer, tmp); });
  log::info("{}: model of {} with the vocabulary of {}: {} rows averaged over the old pieces, {} specials copied, {} "
            "the mean of all rows (E and H each)",
            g_init.out, g_init.model, g_init.tokenizer, c.averaged, c.specials_copied, c.no_pieces);
  return kExitOk;
}

void setup(CLI::App* sub, std::function<int()>& action) {
  sub->require_subcommand(1);
  auto* init = sub->add_subcommand("init", "A model folder for a new vocabulary: each new embedding (and LM-head) "
                                           "row the mean of the old rows of its old pieces");
  init->add_option("--model", g_init.model, "The Hugging Face model folder (its tokenizer is the old one)")->required();
  init->add_option("--tokenizer", g_init.tokenizer, "The new tokenizer: a folder, tokenizer.model or tokenizer.json")->required();
  init->add_option("--out", g_init.out, "New model folder")->required();
  init->callback([&action] { action = [] { return run_init(); }; });
}

}  // namespace

KILN_REGISTER_VERB("lep", "LEP (Learned Embedding Propagation) steps that are not training: init (propagate is planned)",
                   setup);

}  // namespace kiln::lep
