#include "methods/lm/lm_task.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/config.h"
#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "data/align.h"
#include "data/chat.h"
#include "data/preprocess.h"
#include "data/store.h"
#include "data/tokenizer.h"
#include "parallel/world.h"
#include "methods/registry.h"
#include "model/hf_io.h"
#include "model/lm_loss.h"
#include "model/lora.h"

namespace kiln::methods {

KILN_REGISTER_TASK("lm", "causal language-model fine-tuning (LoRA or full) on text or conversations", LmTask);

const char* const kDefaultSystemPrompt = "A virtual assistant answers questions from a user based on the provided text.";

size_t encode_conversation(const std::vector<data::Turn>& turns, const std::string& system, const data::Tokenizer& tok,
                           std::vector<int32_t>& ids, std::vector<uint8_t>& mask, TurnPieces pieces) {
  ids.push_back(tok.bos_id());
  mask.push_back(0);
  auto append = [&](const std::string& text, bool target) {
    std::vector<int32_t> p = tok.encode(text, false);
    ids.insert(ids.end(), p.begin(), p.end());
    mask.insert(mask.end(), p.size(), target ? 1 : 0);
  };
  const bool separate = pieces == TurnPieces::separate;
  size_t last_answer = 0;
  for (size_t t = 0; t < turns.size(); ++t) {
    if (turns[t].from == "gpt") {
      if (separate) append("ASSISTANT: ", false);
      last_answer = ids.size();
      append(turns[t].value, true);
      ids.push_back(tok.eos_id());
      mask.push_back(1);
    } else {
      append((t == 0 ? system + " " : std::string()) + "USER: " + turns[t].value + (separate ? "" : " ASSISTANT:"),
             false);
      last_answer = 0;
    }
  }
  return last_answer == 0 ? ids.size() : last_answer;
}

namespace {

class LmEncoder : public data::Encoder {
 public:
  explicit LmEncoder(std::string system_prompt) : system_(std::move(system_prompt)) {}
  // Conversations in another format than FastChat's (task.chat), with the model's special strings.
  LmEncoder(data::ChatFormat chat, std::map<std::string, int32_t> specials)
      : chat_(std::move(chat)), specials_(std::move(specials)), other_format_(true) {}
  std::string kind() const override { return "lm"; }
  std::vector<data::Field> fields() const override { return {{"loss_mask", data::DType::u8, data::Per::token}}; }
  // The prompt changes the stored ids of conversations: a store made with another one is remade.
  std::string settings() const override {
    if (!conversation_) return "";
    if (!other_format_) return "system_prompt=" + system_;
    return fmt::format("chat={}|{}|{}|{}|{}|{}|{}|{}", chat_.name, chat_.prefix, chat_.system, chat_.user, chat_.assistant,
                       chat_.system_prompt, chat_.trim, chat_.answer_alone);
  }
  void check(const DataConfig& c) const override {
    if (c.format != "text" && c.format != "conversation")
      input_error("key `data.format`: method lm trains on text or conversation files, not `{}`", c.format);
    if (c.kind != "auto" && c.kind != "lm")
      input_error("key `data.kind`: method lm makes `lm` stores (or `auto`), not `{}`", c.kind);
  }
  std::vector<data::Record> read(const DataConfig& c, const std::string&, const std::string& path,
                                 data::ReadStats* stats) const override {
    data::ReadOptions o = data::options_from(c);
    o.label_field.clear();
    return data::read_records(c.format, path, o, stats);
  }
  void encode(const data::Record& rec, const data::EncodeContext& ctx, data::Example& out) const override {
    auto& mask = out.put<uint8_t>("loss_mask");
    if (rec.turns.empty()) {  // plain text: one document, packed after the merge
      out.ids = ctx.tok.encode(rec.text, true, true);
      mask.assign(out.ids.size(), 1);
      return;
    }
    out.ids.clear();
    mask.clear();
    if (!other_format_) {
      encode_conversation(rec.turns, system_, ctx.tok, out.ids, mask);
      return;
    }
    std::vector<data::Message> msgs;
    for (const auto& t : rec.turns)
      msgs.push_back({t.from == "gpt" || t.from == "assistant" ? "assistant" : t.from == "system" ? "system" : "user", t.value});
    data::render_training(chat_, msgs, ctx.tok, specials_, out.ids, mask);
  }
  bool truncates() const override { return conversation_; }
  void finish(data::StoreData& all, const DataConfig& c) const override {
    if (!conversation_) data::pack_documents(all, c.max_len);
  }
  bool conversation_ = false;

 private:
  data::ChatFormat chat_;
  std::map<std::string, int32_t> specials_;
  bool other_format_ = false;
  std::string system_;
};

}  // namespace

std::unique_ptr<data::Encoder> LmTask::encoder(const Recipe& r) const {
  recipe::Node tree = r.tree;  // the encoder only reads: the build() below writes the defaults
  recipe::Section task = recipe::Section::root(tree).sub("task");
  data::ChatFormat chat = data::read_chat_format(task, "chat");
  std::unique_ptr<LmEncoder> enc;
  if (chat.name == "fastchat") {
    enc = std::make_unique<LmEncoder>(task.get_string("system_prompt", kDefaultSystemPrompt));
  } else {
    chat.system_prompt = task.get_string("system_prompt", chat.system_prompt);
    const data::Tokenizer tok = model::load_tokenizer(r.model.path);
    enc = std::make_unique<LmEncoder>(chat, data::special_strings(tok, r.model.path));
  }
  enc->conversation_ = r.data.format == "conversation";
  return enc;
}

void LmTask::prepare(Split, data::Batch& b) const {
  at::Tensor mask = b["loss_mask"] & b["attention_mask"].to(at::kBool);
  b["labels"] = b["input_ids"].masked_fill(mask.logical_not(), int64_t(data::kIgnore));
  b.num_targets = mask.sum().item<int64_t>();
}

void LmTask::build(Recipe& r, parallel::World& world, parallel::Communicator& comm) {
  recipe::Section task = recipe::Section::root(r.tree).sub("task");
  data::ChatFormat chat = data::read_chat_format(task, "chat");
  chat.system_prompt =
      task.get_string("system_prompt", chat.name == "fastchat" ? std::string(kDefaultSystemPrompt) : chat.system_prompt);
  task.finish();
  if (r.data.format == "conversation") trained_chat_ = chat;
  build_model_and_stores(r, world, comm);
}

void LmTask::build_model_and_stores(Recipe& r, parallel::World& world, parallel::Communicator& comm) {
  if (r.model.attention != "causal")
    input_error("{}: method lm trains a causal language model; model.attention must be causal, not `{}`", r.file,
                r.model.attention);
  device_ = world.device();
  lm_head_chunk_ = r.train.lm_head_chunk;
  model_ = model::load_pretrained(r.model, device_);
  model::apply_lora(model_, r.lora, r.model.freeze);

  open_stores(r, model::load_tokenizer(r.model.path), comm);
  log::info("{}: {} train / {} eval examples; {} trainable tensors", r.method, stores_.size(Split::train), stores_.size(Split::eval),
            trainable().size());
}

NamedTensors LmTask::trainable() { return model::trainable_parameters(model_); }

void LmTask::set_training(bool on) { model_->train(on); }

int64_t LmTask::targets(const data::Batch& b) const {
  // Token t predicts token t+1: the first label of each row is never a target.
  const at::Tensor& labels = b["labels"];
  return labels.size(1) < 2 ? 0 : labels.narrow(1, 1, labels.size(1) - 1).ne(data::kIgnore).sum().item<int64_t>();
}

LossSum LmTask::forward(const data::Batch& b, at::Tensor* correct_per_row, at::Tensor* targets_per_row) {
  const int64_t T = b["input_ids"].size(1);
  at::Tensor hidden = model_->hidden_states(b["input_ids"], b["attention_mask"]);
  const int64_t chunk = lm_head_chunk_ < 0 ? model::auto_chunk_rows(model_->config().vocab_size) : lm_head_chunk_;
  model::LmLoss l = model::lm_loss(model_, hidden.narrow(1, 0, T - 1), b["labels"].narrow(1, 1, T - 1), data::kIgnore,
                                   chunk, correct_per_row != nullptr || targets_per_row != nullptr);
  if (correct_per_row) *correct_per_row = l.correct_per_row;
  if (targets_per_row) *targets_per_row = l.targets_per_row;
  return {l.sum, l.targets};
}

LossSum LmTask::loss(const data::Batch& b) {
  if (b["input_ids"].size(1) < 2) return {at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device_)), 0};
  return forward(b, nullptr, nullptr);
}

LossSum LmTask::evaluate(const data::Batch& b, train::EvalRecords& out) {
  at::Tensor correct, count;
  LossSum ls = b["input_ids"].size(1) < 2 ? LossSum{at::zeros({}), 0} : forward(b, &correct, &count);
  for (int64_t r = 0; r < b.size(); ++r) {
    out.example.push_back(b["example_index"][r].item<int64_t>());
    // Per example: the targets predicted right and the targets: token accuracy is a ratio of sums,
    // which gathers exactly.
    out.ints["correct"].push_back(correct.defined() ? correct[r].item<int64_t>() : 0);
    out.ints["targets"].push_back(count.defined() ? count[r].item<int64_t>() : 0);
  }
  return {ls.sum.detach().to(at::kCPU), ls.targets};
}

std::map<std::string, double> LmTask::metrics(const train::EvalRecords& all) {
  int64_t correct = 0, total = 0;
  const auto& right = all.ints_of("correct");
  const auto& targets = all.ints_of("targets");
  for (size_t i = 0; i < right.size(); ++i) {
    correct += right[i];
    total += targets[i];
  }
  std::map<std::string, double> m;
  if (all.loss_count > 0) m["perplexity"] = std::exp(all.loss_sum / double(all.loss_count));
  if (total > 0) m["token_accuracy"] = double(correct) / double(total);
  m["targets"] = double(total);
  return m;
}

void LmTask::export_adapter(const std::string& dir) {
  if (!model::has_lora(model_)) input_error("lora.enabled is false: there is no adapter to export (use --merged)");
  model::AdapterExport o;
  o.task_type = "CAUSAL_LM";
  model::export_adapter(model_, dir, o);
}

void LmTask::export_merged(const std::string& dir) {
  model::export_merged(model_, dir);
  if (!trained_chat_) return;
  // The conversation format the run trained on becomes the folder's chat template, so that
  // transformers' apply_chat_template (and llama.cpp, from a GGUF export) prompt it as kiln did.
  const std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  nlohmann::json j = std::filesystem::exists(path) ? nlohmann::json::parse(read_file(path)) : nlohmann::json::object();
  j["chat_template"] = data::chat_template_jinja(*trained_chat_, model::load_tokenizer(model::model_dir(model_)));
  write_file_atomic(path, j.dump(2) + "\n");
}

train::ExportUse LmTask::export_use(const train::ExportTarget& t) const {
  const std::string dir = model::model_dir(model_);
  const data::Tokenizer tok = model::load_tokenizer(dir);
  std::vector<int64_t> stops = model_->config().eos_token_ids;
  train::ExportUse use;
  use.python = "import torch\n";
  if (!t.merged) use.python += "from peft import PeftModel\n";
  use.python += "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n";
  use.python += t.merged ? "model = AutoModelForCausalLM.from_pretrained(folder).eval()\n"
                         : "model = AutoModelForCausalLM.from_pretrained(base)\n"
                           "model = PeftModel.from_pretrained(model, folder).eval()\n";
  use.python += std::string("tokenizer = AutoTokenizer.from_pretrained(") + (t.merged ? "folder" : "base") + ")\n";
  const std::string prompt = nlohmann::json("Once upon a time").dump();
  // The kiln generate command that gives the same tokens.
  const std::string model_args = t.merged ? t.folder : dir + " --adapter " + t.folder;
  std::string kiln_line;
  if (trained_chat_) {
    const data::ChatFormat& chat = *trained_chat_;
    const int32_t end = data::turn_end_id(chat, tok, data::special_strings(tok, dir));
    if (end >= 0 && std::find(stops.begin(), stops.end(), int64_t(end)) == stops.end()) stops.push_back(end);
    // The run's conversation format: the merged folder's chat template; an adapter's base folder
    // has another (or none), so the lines pass the same template themselves.
    std::string templ_arg;
    if (!t.merged) {
      use.python += "# The run's conversation format (" + chat.name + ") as a chat template.\n";
      use.python += "template = " + nlohmann::json(data::chat_template_jinja(chat, tok)).dump() + "\n";
      templ_arg = ", chat_template=template";
    }
    use.example = "messages = [{\"role\": \"user\", \"content\": " + prompt + "}]\n";
    use.example += "ids = tokenizer.apply_chat_template(messages" + templ_arg +
                   ", add_generation_prompt=True, tokenize=True, return_dict=True)[\"input_ids\"]\n";
    // A format given as a map has no name kiln generate knows.
    if (chat.name != "custom")
      kiln_line = fmt::format("kiln generate {} --chat --chat-format {}{} --prompt {}", model_args, chat.name,
                              chat.system_prompt.empty() ? "" : " --system " + nlohmann::json(chat.system_prompt).dump(),
                              prompt);
  } else {
    const bool bos = tok.adds_bos() && tok.bos_id() >= 0;
    use.example = fmt::format("ids = {}tokenizer({}, add_special_tokens=False)[\"input_ids\"]\n",
                              bos ? fmt::format("[{}] + ", tok.bos_id()) : "", prompt);
    kiln_line = fmt::format("kiln generate {} --prompt {}", model_args, prompt);
  }
  use.example += "with torch.no_grad():\n";
  use.example += fmt::format(
      "    out = model.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False, eos_token_id={})\n",
      nlohmann::json(stops).dump());
  use.example += "new = out[0, len(ids):].tolist()  # greedy, ending with the stop token if one came\n";
  use.example += "print(tokenizer.decode(new))\n";
  if (!kiln_line.empty()) use.example += "# The same tokens, stop token left out: " + kiln_line + " --print-ids\n";
  return use;
}

}  // namespace kiln::methods
