// `kiln export R.yaml --out DIR [--merged] [--checkpoint FILE|RUN_DIR] [key=value ...]`: writes a
// trained checkpoint in Hugging Face form: a PEFT adapter folder (adapter_config.json +
// adapter_model.safetensors, plus the method's heads), or with --merged the LoRA-merged model as
// safetensors with its config.json, or with --gguf TYPE the merged causal LM as one GGUF file for
// llama.cpp (DIR/model-TYPE.gguf, with the tokenizer and chat template). An adapter or merged folder
// holds a README.md saying how to load it in Python, or that transformers and peft cannot reproduce
// it (also said in one log line). Rank 0 writes; an existing non-empty DIR is refused so that
// nothing already exported is overwritten.
#include <cctype>
#include <filesystem>

#include "cli/train_session.h"
#include "core/error.h"
#include "core/files.h"
#include "core/gguf.h"
#include "core/log.h"
#include "model/gguf_model.h"
#include "parallel/world.h"
#include "train/export_readme.h"
#include "train/task.h"
#include "train/trainer.h"

namespace kiln::cli {

namespace {
RecipeArgs g_export_args;
std::string g_checkpoint, g_out, g_gguf;
bool g_merged = false;

int run_export() {
  namespace fs = std::filesystem;
  if (fs::exists(g_out) && !(fs::is_directory(g_out) && fs::is_empty(g_out)))
    input_error("--out {}: exists and is not an empty folder (kiln export never overwrites)", g_out);
  int64_t gguf_type = -1;
  if (!g_gguf.empty()) {
    gguf_type = gguf::type_from_name(g_gguf);
    if (gguf_type < 0 || !model::gguf_can_quantize(uint32_t(gguf_type)))
      input_error("--gguf {}: kiln writes f32, f16, bf16 or q8_0", g_gguf);
  }
  Session s(g_export_args, g_checkpoint, /*base=*/false);
  train::Trainer trainer(s.recipe, *s.task, s.world, *s.comm);
  std::string from = trainer.resume_path();
  if (from.empty()) input_error("no checkpoint to export in {} (give --checkpoint FILE|RUN_DIR)", trainer.run_dir());
  trainer.load_checkpoint(from, /*weights_only=*/true);
  if (s.world.is_root()) {
    // Complete or absent: a failed export (a full disk) leaves no folder to be taken for one.
    if (fs::is_directory(g_out)) fs::remove(g_out);  // empty, checked above
    write_dir_atomic(g_out, [&](const std::string& tmp) {
      if (gguf_type >= 0) {
        // The merged Hugging Face folder is the one description of the model; GGUF is written from it.
        const std::string hf = (fs::path(tmp) / ".merged").string();
        s.task->export_merged(hf);
        std::string name = g_gguf;
        for (auto& ch : name) ch = char(std::tolower(static_cast<unsigned char>(ch)));
        model::export_gguf(hf, (fs::path(tmp) / ("model-" + name + ".gguf")).string(), uint32_t(gguf_type));
        fs::remove_all(hf);
      } else {
        if (g_merged)
          s.task->export_merged(tmp);
        else
          s.task->export_adapter(tmp);
        train::write_export_readme(tmp, {g_out, g_merged}, s.recipe, *s.task, trainer.step(), trainer.run_dir());
      }
    });
    log::info("{} of {} (step {}) written to {}", gguf_type >= 0 ? "GGUF model" : g_merged ? "merged model" : "adapter",
              from, trainer.step(), g_out);
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
  sub->add_option("--gguf", g_gguf, "Write the merged causal LM as one GGUF file for llama.cpp: f32 | f16 | bf16 | q8_0");
  sub->callback([&action] { action = [] { return run_export(); }; });
}

}  // namespace kiln::cli
