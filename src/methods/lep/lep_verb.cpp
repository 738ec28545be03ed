// `kiln lep ...`: the steps of LEP that are not training runs.
//   kiln lep init --model DIR --tokenizer TOK --out DIR   embeddings for a new vocabulary (lep_init.h)
//   kiln lep propagate --base B --instruct I --donor R --mode swap|overlap|conversion --out DIR
//                                                             the donor's embeddings into I (lep_propagate.h)
// Planned (issue 16): the evaluation harness.
#include <CLI/CLI.hpp>

#include <filesystem>

#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "methods/lep/lep_init.h"
#include "methods/lep/lep_propagate.h"
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

struct PropagateArgs {
  std::string base, instruct, donor, mode, out;
  int64_t block_rows = 4096;
} g_prop;

int run_propagate() {
  log::setup(0, 1, false, log::Level::info);
  if (std::filesystem::exists(g_prop.out)) input_error("--out {}: exists (kiln lep propagate never overwrites)", g_prop.out);
  const Mode mode = mode_from(g_prop.mode);
  PropagateReport r;
  write_dir_atomic(g_prop.out, [&](const std::string& tmp) {
    r = propagate(g_prop.base, g_prop.instruct, g_prop.donor, mode, tmp, g_prop.block_rows);
  });
  log::info("{}: {} with the embeddings of {} ({}): {} rows ({} of its own appended); fit residual E {:.3e}, H {:.3e}",
            g_prop.out, g_prop.instruct, g_prop.donor, g_prop.mode, r.rows, r.appended, r.e.residual, r.h.residual);
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
  auto* prop = sub->add_subcommand("propagate", "An instruct model with the donor's learned embeddings: E_R W and H_R W, W "
                                                "fitted by least squares (swap: identity)");
  prop->add_option("--base", g_prop.base, "The base model folder B (the original vocabulary)")->required();
  prop->add_option("--instruct", g_prop.instruct, "The instruction-tuned model folder I (fine-tuned from B)")->required();
  prop->add_option("--donor", g_prop.donor, "B with the new vocabulary after embedding-only training (R)")->required();
  prop->add_option("--mode", g_prop.mode, "swap | overlap | conversion")->required();
  prop->add_option("--out", g_prop.out, "New model folder")->required();
  prop->add_option("--block-rows", g_prop.block_rows, "Rows per block of the least-squares fit (memory: about "
                                                      "(d + rows) x d float64)")->check(CLI::PositiveNumber);
  prop->callback([&action] { action = [] { return run_propagate(); }; });
}

}  // namespace

KILN_REGISTER_VERB("lep", "LEP (Learned Embedding Propagation) steps that are not training: init, propagate",
                   setup);

}  // namespace kiln::lep
