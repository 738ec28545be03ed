// `kiln import gguf FILE --out DIR [--dtype float32|bfloat16]`: a LLaMA-architecture GGUF file (as
// llama.cpp and Ollama hold models) into a Hugging Face model folder every kiln command takes.
#include <cstdlib>

#include "cli/verbs.h"
#include "core/error.h"
#include "core/log.h"
#include "model/gguf_model.h"
#include "model/hf_io.h"

namespace kiln::cli {

namespace {
std::string g_file, g_out, g_dtype = "float32";

int run_import_gguf() {
  model::GgufImportOptions o;
  o.dtype = model::parse_dtype(g_dtype);
  model::import_gguf(g_file, g_out, o);
  log::info("{} imported to {} ({})", g_file, g_out, model::dtype_name(o.dtype));
  return kExitOk;
}
}  // namespace

void add_import(CLI::App& app, Action& action) {
  auto* sub = app.add_subcommand("import", "Import a model from another format into a Hugging Face folder");
  sub->require_subcommand(1);
  auto* g = sub->add_subcommand("gguf", "A LLaMA-architecture GGUF file (llama.cpp, Ollama) into a Hugging Face folder");
  g->add_option("file", g_file, "The .gguf file")->required()->check(CLI::ExistingFile);
  g->add_option("--out", g_out, "Output folder (must not exist, or be empty)")->required();
  g->add_option("--dtype", g_dtype, "Weights in model.safetensors: float32 | bfloat16")->capture_default_str();
  g->callback([&action] { action = [] { return run_import_gguf(); }; });
}

}  // namespace kiln::cli
