// `method: uniner` — UniversalNER (../shared/METHODS.md section 2, docs/uniner.md): conversation-style
// instruction tuning for open NER in FastChat's `ie_as_qa` template, loss on the assistant turns
// only (lm's template and loss; full fine-tuning or LoRA by `lora.enabled`), and evaluation as the
// official script does it: greedy generation with a KV cache, the answer list parsed and normalised,
// micro precision / recall / F1 per dataset (and per entity type).
//
// Stores (kind `uniner`): token field `loss_mask`; example fields `prompt_len` (where the gold
// answer starts: the generation prompt is the tokens before it) and `question` (eval: the label id
// of "{dataset}:{type}"; train: -1); ragged `gold` (eval: the gold answer's UTF-8 bytes).
#pragma once
#include <memory>

#include "data/tokenizer.h"
#include "methods/lm/lm_task.h"
#include "methods/uniner/span_f1.h"

namespace kiln::methods {

class UninerTask : public LmTask {
 public:
  void build(Recipe& recipe, parallel::World& world, parallel::Communicator& comm) override;
  std::unique_ptr<data::Encoder> encoder(const Recipe& recipe) const override;
  LossSum evaluate(const data::Batch& batch, train::EvalRecords& out) override;
  std::map<std::string, double> metrics(const train::EvalRecords& all) override;
  std::string write_results(const train::EvalRecords& all, const std::string& dir) override;
  std::string main_metric() const override { return "f1"; }

 private:
  std::unique_ptr<data::Tokenizer> tok_;
  int64_t max_new_tokens_ = 256;
  std::string padding_side_ = "right";
  uniner::AnswerAt answer_at_ = uniner::AnswerAt::start;
  // This rank's generation since the last metrics(): for the throughput line.
  int64_t gen_tokens_ = 0, gen_rows_ = 0, gen_batch_ = 0;
  double gen_seconds_ = 0;
};

}  // namespace kiln::methods
