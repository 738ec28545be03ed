// `method: regress` — a number per text, the worked example of docs/methods.md (how to add a
// method). The decoder's final hidden states, mean-pooled over the real tokens, feed a linear
// `score` head with one output; the loss is the squared error against the record's number, the
// metrics are MSE, MAE and Pearson's r over the eval split. LoRA trains as the recipe's `lora:`
// says; the head always trains.
//
// Its store (data/schema.h), kind `regression`: BOS + text [+ text_pair]; one float32 `target` per
// example, read from data.label_field (a record whose label is not a number is an error naming its
// file:line). Any labelled format (tsv, csv, sst, jsonl) works: SST-5's 0-4 ratings make a
// sentiment regression (recipes/regress/tiny_sst5.yaml).
#pragma once
#include <torch/nn/modules/linear.h>

#include <memory>

#include "model/llama.h"
#include "train/stores.h"
#include "train/task.h"

namespace kiln::methods::regress {

std::unique_ptr<data::Encoder> make_encoder();

class RegressTask : public train::StoreTask {
 public:
  void build(Recipe& recipe, parallel::World& world, parallel::Communicator& comm) override;
  std::unique_ptr<data::Encoder> encoder(const Recipe& recipe) const override { return make_encoder(); }
  train::NamedTensors trainable() override;
  void set_training(bool on) override;
  void prepare(train::Split s, data::Batch& batch) const override { batch.num_targets = batch.size(); }
  train::LossSum loss(const data::Batch& batch) override;
  // Eval records: reals "pred" and "gold" per example.
  train::LossSum evaluate(const data::Batch& batch, train::EvalRecords& out) override;
  std::map<std::string, double> metrics(const train::EvalRecords& all) override;
  std::string main_metric() const override { return "mse"; }
  void export_adapter(const std::string& dir) override;
  train::ExportUse export_use(const train::ExportTarget& target) const override;

  // Predicted numbers [B], float32.
  at::Tensor predict(const data::Batch& batch);

 private:
  model::Llama model_{nullptr};
  torch::nn::Linear head_{nullptr};
};

}  // namespace kiln::methods::regress
