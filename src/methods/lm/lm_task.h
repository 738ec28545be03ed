// `method: lm` — plain causal-LM fine-tuning: LoRA (or full fine-tuning with lora.enabled: false)
// on a LLaMA-family model over a tokenized `lm` store (text or conversations; the store's loss
// mask says which tokens are targets). Loss: next-token cross-entropy summed over target tokens.
// Metrics: perplexity and next-token accuracy over the eval split's target tokens.
#pragma once
#include <memory>

#include "methods/stores.h"
#include "methods/task.h"
#include "model/llama.h"

namespace kiln::methods {

class LmTask : public StoreTask {
 public:
  void build(Recipe& recipe, dist::World& world) override;
  NamedTensors trainable() override;
  void set_training(bool on) override;
  int64_t targets(const data::Batch& batch) const override;
  LossSum loss(const data::Batch& batch) override;
  LossSum evaluate(const data::Batch& batch, train::EvalRecords& out) override;
  std::map<std::string, double> metrics(const train::EvalRecords& all) override;
  std::string main_metric() const override { return "perplexity"; }
  void export_adapter(const std::string& dir) override;
  void export_merged(const std::string& dir) override;

  model::Llama& model() { return model_; }

 private:
  // Summed next-token loss over targets, and per row: targets and correct argmax predictions.
  LossSum forward(const data::Batch& b, at::Tensor* correct_per_row, at::Tensor* targets_per_row);

  Recipe* recipe_ = nullptr;
  model::Llama model_{nullptr};
  c10::Device device_{c10::kCPU};
};

}  // namespace kiln::methods
