#include "core/config.h"

#include <filesystem>
#include <limits>

#include "core/error.h"

namespace kiln {
namespace {

constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();
constexpr double kInf = std::numeric_limits<double>::infinity();

void read_model(recipe::Section s, ModelConfig& c) {
  c.path = s.require_path("path");
  c.dtype = s.get_choice("dtype", c.dtype, {"float32", "bfloat16", "float16"});
  c.attention = s.get_choice("attention", c.attention, {"causal", "bidirectional"});
  c.activation_checkpointing = s.get_bool("activation_checkpointing", c.activation_checkpointing);
  c.freeze = s.get_strings("freeze", c.freeze);
  s.finish();
}

void read_lora(recipe::Section s, LoraConfig& c) {
  c.enabled = s.get_bool("enabled", c.enabled);
  c.r = s.get_int("r", c.r, 1, 4096);
  c.alpha = s.get_double("alpha", c.alpha, 0, 1e6);
  c.dropout = s.get_double("dropout", c.dropout, 0, 0.99);
  c.target_modules = s.get_strings("target_modules", c.target_modules);
  static const std::vector<std::string> valid = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  for (auto& t : c.target_modules)
    if (std::find(valid.begin(), valid.end(), t) == valid.end())
      input_error("{}: key `lora.target_modules`: `{}` is not a LLaMA linear module (one of q_proj, k_proj, "
                  "v_proj, o_proj, gate_proj, up_proj, down_proj)",
                  s.where("target_modules"), t);
  c.extra_trainable = s.get_strings("extra_trainable", c.extra_trainable);
  // PEFT's layers_to_transform; a negative index counts from the last layer, so a recipe can name
  // "the first and the last" (LEP's calibration) without knowing the model's depth.
  std::vector<std::string> layer_names;
  for (const auto& l : c.layers) layer_names.push_back(std::to_string(l));
  c.layers.clear();
  for (const auto& l : s.get_strings("layers", layer_names)) {
    size_t pos = 0;
    int64_t v = 0;
    try {
      v = std::stoll(l, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (pos == 0 || pos != l.size())
      input_error("{}: key `lora.layers`: `{}` is not a layer index (e.g. [0, -1]: the first and the last)",
                  s.where("layers"), l);
    c.layers.push_back(v);
  }
  s.finish();
}

void read_data(recipe::Section s, DataConfig& c) {
  // The readers of src/data know conll, tsv, csv, sst, jsonl, text and conversation; a method may read
  // formats of its own (Encoder::read), so the method's encoder checks this key.
  c.format = s.get_string("format", c.format);
  c.train = s.get_path("train", c.train);
  c.eval = s.get_path("eval", c.eval);
  c.store_dir = s.get_path("store_dir", c.store_dir);
  c.text_field = s.get_string("text_field", c.text_field);
  c.label_field = s.get_string("label_field", c.label_field);
  c.header = s.get_bool("header", c.header);
  c.labels = s.get_strings("labels", c.labels);
  c.max_len = s.get_int("max_len", c.max_len, 2, 1 << 20);
  c.truncation = s.get_choice("truncation", c.truncation, {"right", "left", "error"});
  c.padding_side = s.get_choice("padding_side", c.padding_side, {"right", "left"});
  c.group_by_length = s.get_bool("group_by_length", c.group_by_length);
  c.on_bad_record = s.get_choice("on_bad_record", c.on_bad_record, {"error", "skip"});
  c.invalid_utf8 = s.get_choice("invalid_utf8", c.invalid_utf8, {"error", "replace"});
  c.max_train_examples = s.get_int("max_train_examples", c.max_train_examples, 0, kMaxInt);
  c.max_eval_examples = s.get_int("max_eval_examples", c.max_eval_examples, 0, kMaxInt);
  c.kind = s.get_string("kind", c.kind);  // checked by the method's encoder
  c.delimiter = s.get_string("delimiter", c.delimiter);
  if (!c.delimiter.empty() && c.delimiter != "\\t" && c.delimiter.size() != 1)
    input_error("{}: key `data.delimiter`: `{}` must be one character (or \\t)", s.where("delimiter"), c.delimiter);
  c.text_pair_field = s.get_string("text_pair_field", c.text_pair_field);
  c.tag_scheme = s.get_choice("tag_scheme", c.tag_scheme, {"bio", "keep"});
  c.document_split = s.get_choice("document_split", c.document_split, {"line", "blank_line"});
  c.skip_lines = s.get_int("skip_lines", c.skip_lines, 0, kMaxInt);
  s.finish();
}

void read_train(recipe::Section s, TrainConfig& c) {
  c.seed = s.get_int("seed", c.seed, 0, kMaxInt);
  c.micro_batch = s.get_int("micro_batch", c.micro_batch, 1, 1 << 20);
  c.eval_batch = s.get_int("eval_batch", c.eval_batch, 0, 1 << 20);
  c.global_batch = s.get_int("global_batch", c.global_batch, 0, 1 << 30);
  c.max_steps = s.get_int("max_steps", c.max_steps, 0, kMaxInt);
  c.epochs = s.get_double("epochs", c.epochs, 0, 1e6);
  c.lr = s.get_double("lr", c.lr, 0, 10);
  c.weight_decay = s.get_double("weight_decay", c.weight_decay, 0, 10);
  c.adam_beta1 = s.get_double("adam_beta1", c.adam_beta1, 0, 0.999999);
  c.adam_beta2 = s.get_double("adam_beta2", c.adam_beta2, 0, 0.999999999);
  c.adam_eps = s.get_double("adam_eps", c.adam_eps, 0, 1);
  c.schedule = s.get_choice("schedule", c.schedule, {"constant", "linear", "cosine"});
  c.warmup_steps = s.get_int("warmup_steps", c.warmup_steps, 0, kMaxInt);
  c.warmup_ratio = s.get_double("warmup_ratio", c.warmup_ratio, 0, 1);
  c.max_grad_norm = s.get_double("max_grad_norm", c.max_grad_norm, 0, kInf);
  c.precision = s.get_choice("precision", c.precision, {"fp32", "bf16", "fp16"});
  if (const recipe::Node* n = s.raw("eval_every"); n && n->kind == recipe::Node::Kind::Scalar && n->scalar == "epoch")
    c.eval_every = kEvalEveryEpoch;
  else
    c.eval_every = s.get_int("eval_every", c.eval_every == kEvalEveryEpoch ? 0 : c.eval_every, 0, kMaxInt);
  c.log_every = s.get_int("log_every", c.log_every, 1, kMaxInt);
  c.threads = s.get_int("threads", c.threads, 0, 4096);
  // auto (the default), or rows of logits per chunk of the LM loss; 0: the whole batch at once.
  if (s.get_string("lm_head_chunk", "auto") == "auto")
    c.lm_head_chunk = -1;
  else
    c.lm_head_chunk = s.get_int("lm_head_chunk", 0, 0, kMaxInt);
  c.memory_check = s.get_choice("memory_check", c.memory_check, {"refuse", "warn", "off"});
  if (c.max_steps == 0 && c.epochs == 0)
    input_error("{}: keys `train.max_steps` and `train.epochs` are both 0: set one of them", s.where("epochs"));
  s.finish();
}

void read_dist(recipe::Section s, DistConfig& c) {
  c.backend = s.get_choice("backend", c.backend, {"auto", "mpi", "nccl"});
  c.bucket_mb = s.get_double("bucket_mb", c.bucket_mb, 0.001, 1 << 16);
  c.overlap = s.get_bool("overlap", c.overlap);
  c.zero1 = s.get_bool("zero1", c.zero1);
  c.timeout_s = s.get_double("timeout_s", c.timeout_s, 0.1, 7 * 24 * 3600.0);
  s.finish();
}

void read_checkpoint(recipe::Section s, CheckpointConfig& c) {
  c.run_dir = s.get_path("run_dir", c.run_dir);
  c.every = s.get_int("every", c.every, 0, kMaxInt);
  c.keep = s.get_int("keep", c.keep, 0, 1 << 20);  // 0: keep every checkpoint
  c.resume = s.get_string("resume", c.resume);
  if (c.resume != "auto" && c.resume != "none") c.resume = s.get_path("resume", c.resume);
  c.rewind = s.get_bool("rewind", c.rewind);
  c.export_adapter = s.get_bool("export_adapter", c.export_adapter);
  c.keep_best = s.get_string("keep_best", c.keep_best);
  const bool lower = c.keep_best == "loss" || c.keep_best == "perplexity";
  c.best_mode = s.get_choice("best_mode", c.best_mode.empty() ? (lower ? "min" : "max") : c.best_mode, {"min", "max"});
  s.finish();
}

void read_log(recipe::Section s, LogConfig& c) {
  c.level = s.get_choice("level", c.level, {"debug", "info", "warn", "error"});
  c.all_ranks = s.get_bool("all_ranks", c.all_ranks);
  c.tensorboard = s.get_bool("tensorboard", c.tensorboard);
  s.finish();
}

}  // namespace

Recipe read_recipe_tree(recipe::Node tree, const std::string& path) {
  Recipe r;
  r.file = path;
  r.tree = std::move(tree);
  auto root = recipe::Section::root(r.tree);
  r.name = root.get_string("name", std::filesystem::path(path).stem().string());
  // Checked against the method registry when the method is made (src/methods/registry.h).
  r.method = root.get_string("method", r.method);
  read_model(root.sub("model"), r.model);
  read_lora(root.sub("lora"), r.lora);
  read_data(root.sub("data"), r.data);
  read_train(root.sub("train"), r.train);
  read_dist(root.sub("dist"), r.dist);
  read_checkpoint(root.sub("checkpoint"), r.checkpoint);
  read_log(root.sub("log"), r.log);
  root.sub("task");  // read by the method
  root.finish();
  if (r.checkpoint.run_dir.empty()) {
    r.checkpoint.run_dir = std::filesystem::absolute(std::filesystem::path("checkpoints") / r.name).string();
    recipe::apply_override(r.tree, "checkpoint.run_dir=" + r.checkpoint.run_dir, "default");
  }
  if (r.data.store_dir.empty()) {
    r.data.store_dir = (std::filesystem::path(r.checkpoint.run_dir) / "data").string();
    recipe::apply_override(r.tree, "data.store_dir=" + r.data.store_dir, "default");
  }
  r.fingerprint = recipe::fingerprint(r.tree);
  return r;
}

Recipe read_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  return read_recipe_tree(recipe::load(path, overrides), path);
}

}  // namespace kiln
