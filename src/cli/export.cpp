// `kiln export R.yaml --out DIR [--merged] [--checkpoint FILE|RUN_DIR] [key=value ...]`: writes a
// trained checkpoint in Hugging Face form: a PEFT adapter folder (adapter_config.json +
// adapter_model.safetensors, plus the method's heads), or with --merged the LoRA-merged model as
// safetensors with its config.json. Rank 0 writes; an existing non-empty DIR is refused so that
// nothing already exported is overwritten.
#include <filesystem>

#include "cli/train_session.h"
#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "parallel/world.h"
#include "train/task.h"
#include "train/trainer.h"

namespace kiln::cli {

namespace {
RecipeArgs g_export_args;
std::string g_checkpoint, g_out;
bool g_merged = false;

int run_export() {
  namespace fs = std::filesystem;
  if (fs::exists(g_out) && !(fs::is_directory(g_out) && fs::is_empty(g_out)))
    input_error("--out {}: exists and is not an empty folder (kiln export never overwrites)", g_out);
  Session s(g_export_args, g_checkpoint, /*base=*/false);
  train::Trainer trainer(s.recipe, *s.task, s.world, *s.comm);
  std::string from = trainer.resume_path();
  if (from.empty()) input_error("no checkpoint to export in {} (give --checkpoint FILE|RUN_DIR)", trainer.run_dir());
  trainer.load_checkpoint(from, /*weights_only=*/true);
  if (s.world.is_root()) {
    // Complete or absent: a failed export (a full disk) leaves no folder to be taken for one.
    if (fs::is_directory(g_out)) fs::remove(g_out);  // empty, checked above
    write_dir_atomic(g_out, [&](const std::string& tmp) {
      if (g_merged)
        s.task->export_merged(tmp);
      else
        s.task->export_adapter(tmp);
    });
    log::info("{} of {} (step {}) written to {}", g_merged ? "merged model" : "adapter", from, trainer.step(), g_out);
  }
  return kExitOk;
}
}  // namespace

void add_export(CLI::App& app, Action& action) {
  auto* sub = app.add_subcommand("export", "Export a checkpoint as a PEFT adapter or a merged Hugging Face model");
  g_export_args.add_to(sub);
  sub->add_option("--out", g_out, "Output folder (must not exist, or be empty)")->required();
  sub->add_option("--checkpoint", g_checkpoint, "Checkpoint file or run directory (default: the recipe's run directory)");
  sub->add_flag("--merged", g_merged, "Write the model with LoRA merged into the base weights (safetensors + config.json)");
  sub->callback([&action] { action = [] { return run_export(); }; });
}

}  // namespace kiln::cli
