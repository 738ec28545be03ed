// The typed recipe: one struct per section, read and validated by read_recipe(). Subsystems take
// these structs, never YAML. Method-specific settings live under `task:` and are read by the
// method's Task with recipe::Section (the raw tree is kept in Recipe::tree for that).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/recipe.h"

namespace kiln {

struct ModelConfig {
  std::string path;                        // Hugging Face folder: config.json, *.safetensors, tokenizer.model
  std::string dtype = "float32";           // float32 | bfloat16 | float16: weights of the frozen base
  std::string attention = "causal";        // causal | bidirectional (LS-unLLaMA)
  bool activation_checkpointing = false;   // recompute each decoder layer in backward
  std::vector<std::string> freeze;         // full fine-tuning: modules kept frozen (e.g. embed_tokens, lm_head)
};

struct LoraConfig {
  bool enabled = true;
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0.0;
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};  // PEFT's LLaMA default
  std::vector<std::string> extra_trainable;  // e.g. embed_tokens, lm_head (LEP) by module name
  std::vector<int64_t> layers;               // decoder layers adapted (negative: from the end); empty: all
};

struct DataConfig {
  std::string format = "tsv";              // conll | tsv | csv | sst | jsonl | text | conversation, or a method's
  std::string train;                       // source files
  std::string eval;
  std::string store_dir;                   // HDF5 stores written by `kiln preprocess` (default <run_dir>/data)
  std::string text_field = "sentence";     // column name or index / JSONL field
  std::string label_field = "label";
  bool header = true;                      // delimited files: first row names the columns
  std::vector<std::string> labels;         // declared label set; empty: taken from the train split
  int64_t max_len = 64;                    // tokens, BOS included
  std::string truncation = "right";        // right | left | error
  std::string padding_side = "right";      // right | left
  bool group_by_length = false;
  std::string on_bad_record = "error";     // error | skip
  std::string invalid_utf8 = "error";      // error (naming file:line) | replace (with U+FFFD)
  int64_t max_train_examples = 0;          // 0: all
  int64_t max_eval_examples = 0;
  // Added by the data pipeline (src/data):
  std::string kind = "auto";               // the store kind, when a method makes several (its docs list
                                           // them); auto: the method chooses from the format
  std::string delimiter;                   // delimited files; empty: `,` for csv, tab for tsv ("\\t" accepted)
  std::string text_pair_field;             // optional second text column/field, appended after the first
  std::string tag_scheme = "bio";          // conll: bio (IOB1 converted to BIO on read) | keep
  std::string document_split = "line";     // text: line (a document per line) | blank_line (paragraphs)
  int64_t skip_lines = 0;                  // text, sst: leading lines to ignore (e.g. a `text` header)
};

struct TrainConfig {
  int64_t seed = 42;
  int64_t micro_batch = 8;                 // per rank, per forward
  int64_t eval_batch = 0;                  // per rank, per evaluation forward (or generation); 0: micro_batch
  int64_t global_batch = 0;                // 0: micro_batch * world size; else micro * world * accumulation
  int64_t max_steps = 0;                   // 0: run `epochs`
  double epochs = 1;
  double lr = 1e-4;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  std::string schedule = "linear";         // constant | linear | cosine
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;               // used when warmup_steps is 0
  double max_grad_norm = 1.0;              // 0: no clipping
  std::string precision = "fp32";          // fp32 | bf16 | fp16 (autocast where the device has it)
  int64_t eval_every = 0;                  // steps; 0: at the end only; kEvalEveryEpoch: `epoch`
  int64_t log_every = 10;
  int64_t threads = 0;                     // intra-op threads per rank; 0: from the core binding
  int64_t lm_head_chunk = -1;              // LM-loss rows per chunk of logits; -1: auto (about 64 MiB); 0: all at once
  std::string memory_check = "refuse";     // refuse | warn | off: a run whose memory plan exceeds the device
};

struct DistConfig {
  std::string backend = "auto";            // auto | mpi | nccl
  double bucket_mb = 25;
  bool overlap = true;                     // all-reduce buckets during backward
  bool zero1 = false;                      // shard optimizer state across ranks
  // Every collective of a step; then every rank exits non-zero. 120 s: a step's collectives wait
  // only for the slowest rank's step (seconds); waits on one rank's long work (checkpoints, store
  // merges, eval shares) have their own hour (Communicator::slow_work_timeout_s).
  double timeout_s = 120;
};

// train.eval_every: epoch, at the end of each pass over the training data.
constexpr int64_t kEvalEveryEpoch = -1;

struct CheckpointConfig {
  std::string run_dir;                     // default: checkpoints/<recipe name>
  int64_t every = 0;                       // steps; 0: only at the end and on SIGTERM/SIGUSR1
  int64_t keep = 3;                        // the newest K checkpoints stay; 0: all
  std::string resume = "auto";             // auto | none | <path>
  bool rewind = false;                     // resume from an older checkpoint of this run: newer ones move aside
  bool export_adapter = true;              // write a PEFT adapter at the end
  std::string keep_best;                   // an eval metric: the run ends on its best evaluation; "": the last
  std::string best_mode;                   // min | max (default: min for loss and perplexity, else max)
};

struct LogConfig {
  std::string level = "info";
  bool all_ranks = false;
  bool tensorboard = true;
};

struct Recipe {
  std::string name;                        // default: the recipe file's stem
  std::string method = "lm";               // a registered method (src/methods; an unknown one lists them)
  std::string file;                        // the top-level recipe file
  ModelConfig model;
  LoraConfig lora;
  DataConfig data;
  TrainConfig train;
  DistConfig dist;
  CheckpointConfig checkpoint;
  LogConfig log;
  recipe::Node tree;                       // the resolved tree, saved as recipe.yaml in the run dir
  std::string fingerprint;                 // recipe::fingerprint of the tree as read, before a method adds defaults
  // Not a recipe key: set by commands that read a trained run (kiln eval, export), which write
  // nothing into its directory (stale stores are made in a cache: train/stores.h).
  bool read_only = false;
};

// Reads every common section; `task` is left to the method (call finish on it there).
// Throws InputError for any bad, missing or unknown key.
Recipe read_recipe(const std::string& path, const std::vector<std::string>& overrides);
Recipe read_recipe_tree(recipe::Node tree, const std::string& path);

}  // namespace kiln
