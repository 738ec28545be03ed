// `kiln generate <model-folder> --prompt TEXT | --ids 1,403,...`: continues a prompt with a Hugging
// Face model (optionally with a PEFT adapter) and prints the continuation; with --chat the prompt is
// a user message in the model's chat format (its tokenizer_config.json template, or --chat-format)
// and the answer stops at the end of the assistant's turn; with --logits FILE also
// writes the prompt's logits, one row per position, so a checkpoint can be checked by hand against
// another implementation.
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/verbs.h"
#include "core/error.h"
#include "data/chat.h"
#include "model/generate.h"
#include "model/hf_io.h"

namespace kiln::cli {

namespace {

struct GenerateArgs {
  std::string model, prompt, ids, logits, adapter, dtype = "float32", chat_format, system;
  int64_t max_new_tokens = 64, threads = 0;
  double temperature = 0, top_p = 1.0;
  uint64_t seed = 0;
  bool no_bos = false, print_ids = false, chat = false;
};

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    if (a == std::string::npos) input_error("--ids `{}`: empty item (expected e.g. 1,403,407)", shorten(s));
    item = item.substr(a, b - a + 1);
    size_t pos = 0;
    int64_t v = -1;
    try {
      v = std::stoll(item, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (pos != item.size() || v < 0) input_error("--ids: `{}` is not a token id (expected e.g. 1,403,407)", shorten(item));
    out.push_back(v);
  }
  if (out.empty()) input_error("--ids: no ids given");
  return out;
}

int run(const GenerateArgs& a) {
  if (a.prompt.empty() == a.ids.empty()) input_error("kiln generate: give exactly one of --prompt TEXT or --ids 1,403,...");
  if (a.threads > 0) at::set_num_threads(int(a.threads));
  model::Llama m = model::load_pretrained(a.model, model::parse_dtype(a.dtype), at::kCPU);
  if (!a.adapter.empty()) {
    model::load_adapter(m, a.adapter);
    model::merge_lora(m);  // one matmul per projection instead of three
  }
  m->eval();
  std::vector<int64_t> prompt;
  std::unique_ptr<data::Tokenizer> tok;
  model::GenerateOptions o;
  if (a.chat && a.prompt.empty()) input_error("kiln generate: --chat takes the user's message as --prompt TEXT");
  if (!a.chat && (!a.chat_format.empty() || !a.system.empty()))
    input_error("kiln generate: --chat-format and --system go with --chat");
  if (!a.prompt.empty()) {
    tok = std::make_unique<data::Tokenizer>(model::load_tokenizer(a.model, m->config()));
    std::vector<int32_t> ids;
    if (a.chat) {
      const data::ChatFormat chat =
          a.chat_format.empty() ? data::chat_format_of_model(a.model) : data::chat_preset(a.chat_format);
      const auto specials = data::special_strings(*tok, a.model);
      std::vector<data::Message> msgs;
      if (!a.system.empty()) msgs.push_back({"system", a.system});
      msgs.push_back({"user", a.prompt});
      ids = data::render(chat, msgs, *tok, specials);
      const int32_t end = data::turn_end_id(chat, *tok, specials);
      if (end >= 0) o.stop_ids.push_back(end);
    } else {
      ids = tok->encode(a.prompt, !a.no_bos);
    }
    prompt.assign(ids.begin(), ids.end());
  } else {
    prompt = parse_ids(a.ids);
  }
  for (int64_t id : prompt)
    if (id >= m->config().vocab_size)
      input_error("--ids: id {} is outside the vocabulary of {} ({} tokens)", id, a.model, m->config().vocab_size);

  if (!a.logits.empty()) {
    at::NoGradGuard ng;
    at::Tensor l = m->forward(at::tensor(prompt, at::kLong).view({1, -1}))[0].to(at::kFloat).contiguous();
    nlohmann::json j;
    j["model"] = a.model;
    j["ids"] = prompt;
    auto rows = nlohmann::json::array();
    for (int64_t t = 0; t < l.size(0); ++t) {
      const float* p = l[t].data_ptr<float>();
      rows.push_back(std::vector<float>(p, p + l.size(1)));
    }
    j["logits"] = rows;
    std::ofstream out(a.logits);
    if (!out) input_error("--logits {}: cannot write", a.logits);
    out << j.dump() << "\n";
    if (!out.flush()) input_error("--logits {}: write failed", a.logits);
  }

  o.max_new_tokens = a.max_new_tokens;
  o.temperature = a.temperature;
  o.top_p = a.top_p;
  o.seed = a.seed;
  auto out = model::generate(m, prompt, o);
  if (tok && !a.print_ids) {
    std::vector<int32_t> ids(out.begin(), out.end());
    std::cout << tok->decode(ids) << std::endl;
  } else {
    std::string s;
    for (int64_t id : out) s += (s.empty() ? "" : ",") + std::to_string(id);
    std::cout << s << std::endl;
  }
  return 0;
}

}  // namespace

void add_generate(CLI::App& app, Action& action) {
  static GenerateArgs a;
  auto* sub = app.add_subcommand("generate", "Continue a prompt with a Hugging Face model folder (greedy or sampled)");
  sub->add_option("model", a.model, "Hugging Face model folder (config.json, *.safetensors, tokenizer.model)")
      ->required()
      ->check(CLI::ExistingDirectory);
  sub->add_option("--prompt", a.prompt, "Prompt text (encoded with the folder's tokenizer, BOS prepended)");
  sub->add_option("--ids", a.ids, "Prompt as comma-separated token ids, e.g. 1,403,407 (prints ids back)");
  sub->add_option("--max-new-tokens", a.max_new_tokens, "Stop after this many new tokens")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  sub->add_option("--temperature", a.temperature, "0: greedy; > 0: sample from softmax(logits / T)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  sub->add_option("--top-p", a.top_p, "Nucleus sampling mass (with --temperature > 0)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--seed", a.seed, "Sampling seed")->capture_default_str();
  sub->add_option("--logits", a.logits, "Write the prompt's logits (one row per position) as JSON to this file");
  sub->add_option("--adapter", a.adapter, "A PEFT LoRA adapter folder to apply (merged for generation)")
      ->check(CLI::ExistingDirectory);
  sub->add_option("--dtype", a.dtype, "float32 | bfloat16 | float16")->capture_default_str();
  sub->add_option("--threads", a.threads, "Intra-op threads (0: libtorch's default)")->capture_default_str();
  sub->add_flag("--no-bos", a.no_bos, "Do not prepend BOS to --prompt");
  sub->add_flag("--chat", a.chat, "--prompt is a user message in the model's chat format; stop at the end of the turn");
  sub->add_option("--chat-format", a.chat_format,
                  "With --chat: a kiln preset (chatml, llama3, openchat, fastchat, ...) instead of the model's template");
  sub->add_option("--system", a.system, "With --chat: a system message (default: the template's own, if any)");
  sub->add_flag("--print-ids", a.print_ids, "Print the continuation as ids even for --prompt");
  sub->callback([&action] { action = [] { return run(a); }; });
}

}  // namespace kiln::cli
