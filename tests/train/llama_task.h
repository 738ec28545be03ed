// A Task on a real (small, randomly initialised) LLaMA for trainer tests at the settings users run:
// LoRA or full fine-tuning, activation checkpointing, a bf16 base, any attention mode. Sequence
// classification from the last token's hidden state into a linear head, on synthetic sequences
// (label = sum of ids mod 3). No dropout, so runs that split the global batch differently (ranks,
// accumulation) compute the same thing and can be compared to rounding.
#pragma once
#include <torch/nn/modules/linear.h>

#include <random>

#include "core/config.h"
#include "data/collate.h"
#include "model/llama.h"
#include "model/lora.h"
#include "train/metrics.h"
#include "train/task.h"

namespace kiln::test {

inline model::LlamaConfig small_llama_config() {
  model::LlamaConfig c;
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = true;
  return c;
}

class LlamaTask : public train::Task {
 public:
  void build(Recipe& r, parallel::World&, parallel::Communicator&) override {
    at::manual_seed(uint64_t(r.train.seed));
    const auto dtype = r.model.dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
    model = model::Llama(small_llama_config(), dtype);
    model->init_weights(0.2);
    model->set_activation_checkpointing(r.model.activation_checkpointing);
    model::apply_lora(model, r.lora, r.model.freeze);
    head = torch::nn::Linear(32, 3);
    head->to(dtype);
    std::mt19937 gen(4321);  // the data never depends on the torch RNG
    for (int split = 0; split < 2; ++split)
      for (int i = 0; i < (split == 0 ? 96 : 24); ++i) {
        int len = 4 + int(gen() % 9);
        std::vector<int64_t> ids;
        int64_t sum = 0;
        for (int t = 0; t < len; ++t) {
          ids.push_back(1 + int64_t(gen() % 39));
          sum += ids.back();
        }
        examples[split].push_back(ids);
        labels[split].push_back(sum % 3);
      }
  }
  train::NamedTensors trainable() override {
    train::NamedTensors out = model::trainable_parameters(model);
    out.emplace_back("head.weight", head->weight);
    out.emplace_back("head.bias", head->bias);
    return out;
  }
  void set_training(bool on) override {
    model->train(on);
    head->train(on);
  }
  int64_t size(train::Split s) const override { return int64_t(examples[int(s)].size()); }
  data::Batch collate(train::Split s, const std::vector<int64_t>& idx) override {
    int64_t B = int64_t(idx.size()), T = 0;
    for (auto i : idx) T = std::max<int64_t>(T, int64_t(examples[int(s)][size_t(i)].size()));
    at::Tensor input_ids = at::zeros({B, T}, at::kLong), mask = at::zeros({B, T}, at::kLong);
    at::Tensor label = at::empty({B}, at::kLong), last = at::empty({B}, at::kLong);
    for (int64_t r = 0; r < B; ++r) {
      auto& ex = examples[int(s)][size_t(idx[size_t(r)])];
      for (size_t t = 0; t < ex.size(); ++t) {
        input_ids[r][int64_t(t)] = ex[t];
        mask[r][int64_t(t)] = 1;
      }
      label[r] = labels[int(s)][size_t(idx[size_t(r)])];
      last[r] = int64_t(ex.size()) - 1;
    }
    data::Batch b;
    b["input_ids"] = input_ids;
    b["attention_mask"] = mask;
    b["labels"] = label;
    b["last"] = last;
    b["example_index"] = at::tensor(idx, at::kLong);
    b.num_targets = B;
    return b;
  }
  at::Tensor logits(const data::Batch& b) {
    at::Tensor h = model->hidden_states(b["input_ids"], b["attention_mask"]);
    at::Tensor pooled = h.index({at::arange(h.size(0)), b["last"]});
    return head->forward(pooled.to(head->weight.scalar_type())).to(at::kFloat);
  }
  train::LossSum loss(const data::Batch& b) override {
    return {at::cross_entropy_loss(logits(b), b["labels"], {}, at::Reduction::Sum), b.size()};
  }
  train::LossSum evaluate(const data::Batch& b, train::EvalRecords& out) override {
    at::Tensor l = logits(b);
    at::Tensor pred = l.argmax(-1);
    for (int64_t r = 0; r < b.size(); ++r) {
      out.example.push_back(b["example_index"][r].item<int64_t>());
      out.ints["pred"].push_back(pred[r].item<int64_t>());
      out.ints["gold"].push_back(b["labels"][r].item<int64_t>());
    }
    return {at::cross_entropy_loss(l, b["labels"], {}, at::Reduction::Sum), b.size()};
  }
  std::map<std::string, double> metrics(const train::EvalRecords& all) override {
    return {{"accuracy", train::accuracy(all.ints_of("pred"), all.ints_of("gold"))}};
  }
  std::string main_metric() const override { return "accuracy"; }

  model::Llama model{nullptr};
  torch::nn::Linear head{nullptr};
  std::vector<std::vector<int64_t>> examples[2];
  std::vector<int64_t> labels[2];
};

}  // namespace kiln::test
