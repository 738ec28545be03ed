// `kiln lep ...`: the steps of LEP that are not training runs.
//   kiln lep init --model DIR --tokenizer TOK --out DIR   embeddings for a new vocabulary (lep_init.h)
//   kiln lep propagate --base B --instruct I --donor R --mode swap|overlap|conversion --out DIR
//                                                             the donor's embeddings into I (lep_propagate.h)
//   kiln lep bench --model DIR --tasks TABLE.yaml [--out DIR]  a Darumeru-style benchmark (bench.h)
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "methods/lep/bench.h"
#include "methods/lep/lep_init.h"
#include "methods/lep/lep_propagate.h"
#include "methods/registry.h"
#include "model/hf_io.h"

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
  log::info("{}: model of {} with the vocabulary of {}: {} rows copied from the same old token, {} averaged over the "
            "old pieces, {} specials copied, {} the mean of all rows (E and H each)",
            g_init.out, g_init.model, g_init.tokenizer, c.copied, c.averaged, c.specials_copied, c.no_pieces);
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
  log::info("{}: {} with the embeddings of {} ({}): {} rows ({} of its own appended, {} added/special tokens with its "
            "rows); fit residual E {:.3e}, H {:.3e}",
            g_prop.out, g_prop.instruct, g_prop.donor, g_prop.mode, r.rows, r.appended, r.from_instruct, r.e.residual,
            r.h.residual);
  return kExitOk;
}

struct BenchArgs {
  std::string model, tasks, out, chat, system_prompt, dtype = "float32", device = "cpu";
  int64_t max_len = 0, threads = 0;
  std::vector<std::string> only;
  bool system_set = false;
} g_bench;

int run_bench() {
  namespace fs = std::filesystem;
  using nlohmann::json;
  log::setup(0, 1, false, log::Level::info);
  if (!g_bench.out.empty() && fs::exists(g_bench.out))
    input_error("--out {}: exists (kiln lep bench never overwrites)", g_bench.out);
  if (g_bench.threads > 0) at::set_num_threads(int(g_bench.threads));
  BenchTable table = read_table(g_bench.tasks);
  ChatFormat chat = g_bench.chat.empty() ? table.chat : data::chat_preset(g_bench.chat);
  if (g_bench.system_set) chat.system_prompt = g_bench.system_prompt;
  for (const auto& name : g_bench.only)
    if (std::none_of(table.tasks.begin(), table.tasks.end(), [&](const TaskSpec& t) { return t.name == name; }))
      input_error("--task {}: no such task in {}", name, g_bench.tasks);
  if (!g_bench.only.empty())  // the tasks --task names, in the table's order
    table.tasks.erase(std::remove_if(table.tasks.begin(), table.tasks.end(),
                                     [](const TaskSpec& t) {
                                       return std::find(g_bench.only.begin(), g_bench.only.end(), t.name) ==
                                              g_bench.only.end();
                                     }),
                      table.tasks.end());
  for (const auto& task : table.tasks)
    if (!fs::is_regular_file(task.file))
      input_error("{}: task `{}`: no records file {} (or run the others with --task)", task.where, task.name, task.file);
  model::Llama model = model::load_pretrained(g_bench.model, model::parse_dtype(g_bench.dtype), c10::Device(g_bench.device));
  const data::Tokenizer tok = model::load_tokenizer(g_bench.model);
  const auto specials = data::special_strings(tok, g_bench.model);
  BenchOptions opts;
  opts.max_len = g_bench.max_len;
  std::vector<TaskResult> results;
  for (const auto& task : table.tasks) {
    const auto t0 = std::chrono::steady_clock::now();
    results.push_back(run_task(model, tok, specials, chat, task, opts));
    log::info("{}: {} records, score {:.4f}{} ({:.1f} s)", task.name, results.back().records, results.back().score,
              results.back().truncated ? fmt::format(", {} prompts truncated", results.back().truncated) : "",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  // The table: a row per task, its metrics, and the plain mean of the task scores (Darumeru's micro average).
  json j = {{"model", fs::absolute(g_bench.model).string()}, {"tasks_table", fs::absolute(g_bench.tasks).string()},
            {"chat", chat.name}, {"tasks", json::object()}};
  std::string md = fmt::format("model `{}`, chat format `{}`\n\n| task | records | score | metrics |\n|---|---|---|---|\n",
                               g_bench.model, chat.name);
  double mean = 0;
  for (const auto& r : results) {
    std::string ms;
    for (const auto& [k, v] : r.metrics) ms += fmt::format("{}{} {:.4f}", ms.empty() ? "" : ", ", k, v);
    if (r.truncated) ms += fmt::format(" ({} prompts truncated)", r.truncated);
    md += fmt::format("| {} | {} | {:.4f} | {} |\n", r.name, r.records, r.score, ms);
    j["tasks"][r.name] = {{"records", r.records}, {"truncated", r.truncated}, {"score", r.score}, {"metrics", r.metrics}};
    mean += r.score / double(results.size());
  }
  md += fmt::format("| mean | | {:.4f} | |\n", mean);
  j["mean_score"] = mean;
  std::cout << md << std::flush;
  if (!g_bench.out.empty())
    write_dir_atomic(g_bench.out, [&](const std::string& tmp) {
      write_file_atomic((fs::path(tmp) / "results.json").string(), j.dump(2) + "\n");
      write_file_atomic((fs::path(tmp) / "results.md").string(), md);
      for (const auto& r : results) {
        std::string lines;
        for (const auto& p : r.predictions) lines += p.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
        write_file_atomic((fs::path(tmp) / (r.name + ".jsonl")).string(), lines);
      }
    });
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
  auto* bench = sub->add_subcommand("bench", "A Darumeru-style benchmark: tasks of {messages, inputs, outputs, meta} "
                                             "records scored as a table declares (choice log-likelihood, generation)");
  bench->add_option("--model", g_bench.model, "The Hugging Face model folder")->required();
  bench->add_option("--tasks", g_bench.tasks, "The task table (YAML: chat, tasks)")->required();
  bench->add_option("--task", g_bench.only, "Run only this task of the table (repeatable)");
  bench->add_option("--chat", g_bench.chat, "Conversation format, overriding the table's: fastchat | llama3 | "
                                            "openchat | chatml | plain | llama2c");
  bench->add_option("--system-prompt", g_bench.system_prompt, "A system message for records without one")
      ->each([](const std::string&) { g_bench.system_set = true; });
  bench->add_option("--out", g_bench.out, "New folder for results.json, results.md and each task's predictions");
  bench->add_option("--max-len", g_bench.max_len, "Prompt + answer tokens (default: the model's "
                                                  "max_position_embeddings); longer prompts lose their start");
  bench->add_option("--dtype", g_bench.dtype, "float32 | bfloat16 | float16");
  bench->add_option("--device", g_bench.device, "cpu | cuda | cuda:N");
  bench->add_option("--threads", g_bench.threads, "CPU threads (default: libtorch's)");
  bench->callback([&action] { action = [] { return run_bench(); }; });
}

}  // namespace

KILN_REGISTER_VERB("lep", "LEP (Learned Embedding Propagation) steps that are not training: init, propagate, bench",
                   setup);

}  // namespace kiln::lep
