// `method: ls_llama` — LS-LLaMA / LS-unLLaMA (Li et al. 2023, "Label Supervised LLaMA Finetuning").
// The decoder's final hidden states feed a classifier instead of the LM head:
//   sequence classification (a classification store): pool (task.pooling: last | mean | max, both
//     masked unless task.pads: attended) -> dropout -> `score` linear over the labels (max: the
//     linear on every position, then the maximum per class, as the official code orders them);
//     cross-entropy per example.
//   token classification (a CoNLL store): dropout -> `classifier` linear per token; cross-entropy on
//     the first sub-token of each word (the others carry kIgnore); predictions mapped back to words
//     for CoNLL span F1.
// model.attention: causal (LS-LLaMA) or bidirectional (LS-unLLaMA). LoRA on lora.target_modules;
// the LoRA matrices and the head train, the base stays frozen.
// task.adapter: a PEFT adapter folder this task exported (adapter_config.json, LoRA and head
// weights) to start from instead of fresh LoRA and head: `kiln eval R.yaml --base task.adapter=DIR`
// evaluates an exported adapter.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "data/collate.h"
#include "methods/ls_llama/heads.h"
#include "methods/ls_llama/hf_code.h"
#include "model/llama.h"
#include "model/pooling.h"
#include "train/stores.h"
#include "train/task.h"

namespace kiln::methods::ls_llama {

using train::LossSum;
using train::NamedTensors;
using train::Split;

class LsLlamaTask : public train::StoreTask {
 public:
  void build(Recipe& recipe, parallel::World& world, parallel::Communicator& comm) override;
  std::unique_ptr<data::Encoder> encoder(const Recipe& recipe) const override;
  NamedTensors trainable() override;
  void set_training(bool on) override;
  LossSum loss(const data::Batch& batch) override;
  LossSum evaluate(const data::Batch& batch, train::EvalRecords& out) override;
  // Eval records: ints "pred"/"gold", vecs "logits" (per class) and reals "score" (P(class 1),
  // binary only) per sentence; for token classification seqs "pred_tags"/"gold_tags" (tag ids per
  // word), "token_ids" and "token_gold" (per real token) and vecs "logits" (per real token, a
  // logit per tag, flattened).
  std::map<std::string, double> metrics(const train::EvalRecords& all) override;
  // predictions.tsv: sequence classification a row per example (example, gold, pred, a logit per
  // label); token classification a row per real token (example, position, token id, gold or `-`
  // where no label is scored, pred, a logit per label).
  std::string write_results(const train::EvalRecords& all, const std::string& dir) override;
  std::string main_metric() const override { return token_ ? "span_f1" : "accuracy"; }
  // Both carry modeling_kiln_llama.py where transformers' own classes do not compute kiln's
  // outputs (hf_code.h); export_use gives the Python lines for each case.
  void export_adapter(const std::string& dir) override;
  void export_merged(const std::string& dir) override;
  train::ExportUse export_use(const train::ExportTarget& target) const override;

  bool token_classification() const { return token_; }
  model::Pooling pooling() const { return pooling_; }
  const std::vector<std::string>& label_names() const { return labels_; }
  model::Llama& model() { return model_; }
  Head& head() { return head_; }
  // Class scores: [B, labels] (sequence) or [B, T, labels] (token), float32.
  at::Tensor logits(const data::Batch& batch);

  // labels (classification [B]; token classification [B, T] from token_labels) and the target count.
  void prepare(Split s, data::Batch& batch) const override;

 private:
  std::string head_name() const { return token_ ? kTokenHeadName : kSequenceHeadName; }
  NamedTensors head_params();

  model::Llama model_{nullptr};
  Head head_{nullptr};
  bool token_ = false;
  model::Pooling pooling_ = model::Pooling::last;
  // task.pads: attended — no padding mask in attention and pads counted by the pooling, as the
  // official LS-unLLaMA code does; masked (default) — pads never seen.
  bool pads_attended_ = false;
  std::vector<std::string> labels_;
  int32_t outside_ = 0;  // the `O` tag: the prediction of a word truncated away
  HfSettings hf_;        // what an export must tell transformers
  int32_t pad_id_ = 0;   // the stores' pad id, for the exports' README
};

}  // namespace kiln::methods::ls_llama
