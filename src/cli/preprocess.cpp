// `kiln preprocess R.yaml [key=value ...]`: reads the recipe's data files, tokenizes them with the
// model's tokenizer and writes <data.store_dir>/train.h5 (and eval.h5). Under mpirun each rank
// tokenizes its own slice and rank 0 merges (with the recipe method's encoder: its stores are its own): the store is the same for any number of ranks, so it
// must sit on a file system every rank sees.
#include <fmt/ranges.h>
#include <algorithm>

#include "cli/verbs.h"
#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "data/preprocess.h"
#include "data/tokenizer.h"
#include "model/hf_io.h"
#include "parallel/communicator.h"
#include "parallel/world.h"
#include "methods/registry.h"

namespace kiln::cli {

namespace {
RecipeArgs g_preprocess_args;

int run_preprocess(const RecipeArgs& args) {
  Recipe r = read_recipe(args.recipe, args.overrides);
  auto& world = world_for_cpu_work();
  std::string level = args.log_level != "info" ? args.log_level : r.log.level;
  log::setup(world.rank(), world.size(), args.log_all_ranks || r.log.all_ranks, log::parse_level(level));
  // The method says what its stores hold; its model is not loaded.
  std::unique_ptr<data::Encoder> enc = methods::make_task(r)->encoder(r);
  if (!enc) input_error("{}: method `{}` reads no data stores: there is nothing to preprocess", r.file, r.method);
  // As training loads it (special ids from config.json, BOS policy from tokenizer_config.json), so
  // the stores hold what the training run would have encoded.
  data::Tokenizer tok = model::load_tokenizer(r.model.path);
  // Files are exchanged through data.store_dir; the communicator only orders the ranks. Rank 0
  // merges while the others wait at the last barrier, so the deadline is at least an hour.
  DistConfig dc = r.dist;
  dc.backend = "mpi";
  dc.timeout_s = std::max(dc.timeout_s, 3600.0);
  auto comm = parallel::make_communicator(dc, world);
  data::Parallel par{world.rank(), world.size(), [&] { comm->barrier("preprocess"); }};
  log::info("preprocess: {} ({}, kind {}) with {} on {} rank(s)", fmt::join(enc->sources(r.data, "train"), ", "),
            r.data.format, enc->kind(), tok.path(), world.size());
  for (auto& s : data::preprocess(r, *enc, tok, par)) {
    log::info("{}: {} examples, {} tokens -> {} ({} source records, {} skipped, {} truncated to {} tokens)", s.split,
              s.examples, s.tokens, s.path, s.source_records, s.skipped, s.truncated, r.data.max_len);
    log::info("{}: {:.3f} s, {:.0f} tokens/s (rank 0 tokenized its slice in {:.3f} s)", s.split, s.seconds,
              s.seconds > 0 ? double(s.tokens) / s.seconds : 0.0, s.tokenize_seconds);
  }
  return kExitOk;
}

}  // namespace

void add_preprocess(CLI::App& app, Action& action) {
  auto* sub = app.add_subcommand("preprocess", "Tokenize the recipe's data into HDF5 stores in data.store_dir "
                                               "(under mpirun, every rank tokenizes a slice)");
  g_preprocess_args.add_to(sub);
  sub->callback([&action] { action = [] { return run_preprocess(g_preprocess_args); }; });
}

}  // namespace kiln::cli
