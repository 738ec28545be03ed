// A Task on a real (small, randomly initialised) LLaMA for trainer tests at the settings users run:
// LoRA or full fine-tuning, activation checkpointing, a bf16 base, any attention mode. Sequence
// classification from the last token's hidden state into a linear head, on ToyTask's synthetic
// sequences. No dropout, so runs that split the global batch differently (ranks, accumulation)
// compute the same thing and can be compared to rounding.
#pragma once
#include <torch/nn/modules/linear.h>

#include "model/llama.h"
#include "model/lora.h"
#include "toy_task.h"

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

// ToyTask's data and batches (synthetic sequences, label = sum of ids mod 3); a LLaMA in place of
// its bag of embeddings.
class LlamaTask : public ToyTask {
 public:
  void build(Recipe& r, parallel::World& world, parallel::Communicator& comm) override {
    ToyTask::build(r, world, comm);
    const auto dtype = r.model.dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
    llama = model::Llama(small_llama_config(), dtype);
    llama->init_weights(0.2);
    llama->set_activation_checkpointing(r.model.activation_checkpointing);
    model::apply_lora(llama, r.lora, r.model.freeze);
    head = torch::nn::Linear(32, 3);
    head->to(dtype);
  }
  train::NamedTensors trainable() override {
    train::NamedTensors out = model::trainable_parameters(llama);
    out.emplace_back("head.weight", head->weight);
    out.emplace_back("head.bias", head->bias);
    return out;
  }
  void set_training(bool on) override {
    llama->train(on);
    head->train(on);
  }
  // From the last real token's hidden state (batches are right-padded).
  at::Tensor logits(const data::Batch& b) {
    at::Tensor h = llama->hidden_states(b["input_ids"], b["attention_mask"]);
    at::Tensor pooled = h.index({at::arange(h.size(0)), b["lengths"] - 1});
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

  model::Llama llama{nullptr};
  torch::nn::Linear head{nullptr};
};

}  // namespace kiln::test
