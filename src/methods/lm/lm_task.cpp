#include "methods/lm/lm_task.h"

#include <cmath>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "data/align.h"
#include "data/tokenizer.h"
#include "dist/world.h"
#include "methods/registry.h"
#include "model/hf_io.h"
#include "model/lora.h"

namespace kiln::methods {

KILN_REGISTER_TASK("lm", "causal language-model fine-tuning (LoRA or full) on text or conversations", LmTask);

void LmTask::build(Recipe& r, dist::World& world) {
  recipe_ = &r;
  recipe::Section::root(r.tree).sub("task").finish();  // lm has no settings of its own
  if (r.model.attention != "causal")
    input_error("{}: method lm trains a causal language model; model.attention must be causal, not `{}`", r.file,
                r.model.attention);
  device_ = world.device();
  model_ = model::load_pretrained(r.model, device_);
  model::apply_lora(model_, r.lora);

  stores_ = Stores::open(r, model::load_tokenizer(r.model.path), world);
  if (stores_.train().kind() != "lm")
    input_error("{}: method lm needs an `lm` store (text or conversation data), this one holds `{}`",
                stores_.train_path(), stores_.train().kind());
  log::info("lm: {} train / {} eval examples; {} trainable tensors", stores_.size(Split::train), stores_.size(Split::eval),
            trainable().size());
}

NamedTensors LmTask::trainable() { return model::trainable_parameters(model_); }

void LmTask::set_training(bool on) { model_->train(on); }

int64_t LmTask::targets(const data::Batch& b) const {
  // Token t predicts token t+1: the first label of each row is never a target.
  return b.labels.size(1) < 2 ? 0 : b.labels.narrow(1, 1, b.labels.size(1) - 1).ne(data::kIgnore).sum().item<int64_t>();
}

LossSum LmTask::forward(const data::Batch& b, at::Tensor* correct_per_row, at::Tensor* targets_per_row) {
  const int64_t T = b.input_ids.size(1);
  at::Tensor hidden = model_->hidden_states(b.input_ids, b.attention_mask);
  at::Tensor logits = model_->logits(hidden.narrow(1, 0, T - 1)).to(at::kFloat);  // [B, T-1, V]
  at::Tensor labels = b.labels.narrow(1, 1, T - 1);
  at::Tensor sum = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}), {},
                                          at::Reduction::Sum, data::kIgnore);
  at::Tensor mask = labels.ne(data::kIgnore);
  if (correct_per_row) *correct_per_row = (logits.argmax(-1).eq(labels) & mask).sum(1).to(at::kCPU);
  if (targets_per_row) *targets_per_row = mask.sum(1).to(at::kCPU);
  return {sum, mask.sum().item<int64_t>()};
}

LossSum LmTask::loss(const data::Batch& b) {
  if (b.input_ids.size(1) < 2) return {at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device_)), 0};
  return forward(b, nullptr, nullptr);
}

LossSum LmTask::evaluate(const data::Batch& b, train::EvalRecords& out) {
  at::Tensor correct, count;
  LossSum ls = b.input_ids.size(1) < 2 ? LossSum{at::zeros({}), 0} : forward(b, &correct, &count);
  for (int64_t r = 0; r < b.size(); ++r) {
    out.example.push_back(b.example_index[r].item<int64_t>());
    // For lm the per-example "prediction" is the number of targets predicted right, "gold" the
    // number of targets: token accuracy is a ratio of sums, which gathers exactly.
    out.pred.push_back(correct.defined() ? correct[r].item<int64_t>() : 0);
    out.gold.push_back(count.defined() ? count[r].item<int64_t>() : 0);
  }
  return {ls.sum.detach().to(at::kCPU), ls.targets};
}

std::map<std::string, double> LmTask::metrics(const train::EvalRecords& all) {
  int64_t correct = 0, total = 0;
  for (size_t i = 0; i < all.pred.size(); ++i) {
    correct += all.pred[i];
    total += all.gold[i];
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

void LmTask::export_merged(const std::string& dir) { model::export_merged(model_, dir); }

}  // namespace kiln::methods
