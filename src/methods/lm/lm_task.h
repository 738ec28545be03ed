// `method: lm` — plain causal-LM fine-tuning: LoRA (or full fine-tuning with lora.enabled: false)
// on a LLaMA-family model over a tokenized `lm` store (text or conversations; the store's loss
// mask says which tokens are targets). Loss: next-token cross-entropy summed over target tokens.
// Metrics: perplexity and next-token accuracy over the eval split's target tokens.
//
// The `lm` store (data/schema.h) holds one token field, `loss_mask` (uint8: 1 where the token is a
// target):
//   text          `BOS doc EOS` per document, concatenated and cut into data.max_len windows after
//                 the ranks' parts are merged; every token is a target.
//   conversation  FastChat's `ie_as_qa` template (the one UniversalNER trains with):
//                 `{system} USER: {q} ASSISTANT: {a}</s>USER: ...`, targets only on `{a}</s>` (the
//                 `</s>` is the EOS id, not the literal text). task.system_prompt sets {system}.
//                 task.chat names another conversation format (data/chat.h: llama3, openchat,
//                 chatml, plain, llama2c, or a map of templates), for a model trained in its own: targets
//                 are then each assistant turn's content and the end of its turn.
#pragma once
#include <memory>
#include <optional>

#include "data/chat.h"
#include "data/readers.h"
#include "model/llama.h"
#include "train/stores.h"
#include "train/task.h"

namespace kiln::data {
class Tokenizer;
}

namespace kiln::methods {

// A conversation in FastChat's `ie_as_qa` template: BOS, then `{system} USER: {q} ASSISTANT:` for
// the first human turn, `USER: {q} ASSISTANT:` for later ones, and `{a}</s>` for each gpt turn
// (the `</s>` is the EOS id). Appends to `ids` and `mask` (1 on answer tokens and their EOS, the
// loss targets) and returns the position where the last gpt turn's tokens start (ids.size() when
// the conversation ends with a human turn): a generation prompt is ids[0, that).
//
// `pieces` says how the text is cut into tokenizer calls. `joined`: `{system} USER: {q} ASSISTANT:`
// in one call and `{a}` in another, the prompt UniversalNER's evaluation builds. `separate`: the
// calls of the official training script (universal-ner src/train/fastchat/train/train.py,
// preprocess2): `{system} USER: {q}` (later turns `USER: {q}`), then `ASSISTANT: ` alone, which ends
// in a lone space token, then `{a}`. The official model trained on the second and is asked in the
// first.
enum class TurnPieces { joined, separate };
size_t encode_conversation(const std::vector<data::Turn>& turns, const std::string& system, const data::Tokenizer& tok,
                           std::vector<int32_t>& ids, std::vector<uint8_t>& mask,
                           TurnPieces pieces = TurnPieces::joined);

using train::LossSum;
using train::NamedTensors;
using train::Split;

class LmTask : public train::StoreTask {
 public:
  void build(Recipe& recipe, parallel::World& world, parallel::Communicator& comm) override;
  std::unique_ptr<data::Encoder> encoder(const Recipe& recipe) const override;
  NamedTensors trainable() override;
  void set_training(bool on) override;
  int64_t targets(const data::Batch& batch) const override;
  LossSum loss(const data::Batch& batch) override;
  LossSum evaluate(const data::Batch& batch, train::EvalRecords& out) override;
  std::map<std::string, double> metrics(const train::EvalRecords& all) override;
  std::string main_metric() const override { return "perplexity"; }
  void export_adapter(const std::string& dir) override;
  void export_merged(const std::string& dir) override;
  // AutoModelForCausalLM (with peft for an adapter) and greedy generate() on a prompt in the run's
  // conversation format (the merged folder's chat template) or on plain text: kiln generate's tokens.
  train::ExportUse export_use(const train::ExportTarget& target) const override;

  model::Llama& model() { return model_; }

  // labels [B, T]: the ids where loss_mask is set, kIgnore elsewhere (not shifted: loss() shifts).
  void prepare(Split s, data::Batch& batch) const override;

 protected:
  // Loads the model (LoRA applied) and opens the stores: build() after the method's `task:` keys.
  void build_model_and_stores(Recipe& recipe, parallel::World& world, parallel::Communicator& comm);
  // Summed next-token loss over targets, and per row: targets and correct argmax predictions.
  LossSum forward(const data::Batch& b, at::Tensor* correct_per_row, at::Tensor* targets_per_row);

  model::Llama model_{nullptr};
  int64_t lm_head_chunk_ = -1;  // train.lm_head_chunk
  // The chat format of a run on conversations (set by build(); UniNER's always): a merged
  // export's chat template, and the prompt of the export's README.
  std::optional<data::ChatFormat> trained_chat_;
};

// The default {system} text of conversations: UniversalNER's.
extern const char* const kDefaultSystemPrompt;

}  // namespace kiln::methods
