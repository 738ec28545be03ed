// A small but real Task for trainer tests: bag-of-embeddings classifier with dropout over synthetic
// token sequences (label = sum of ids mod 3). It exercises everything the trainer relies on:
// variable lengths and padding, a no-decay bias, dropout (RNG state), and every metric kind.
#pragma once
#include <signal.h>
#include <unistd.h>

#include <random>

#include "core/config.h"
#include "data/collate.h"
#include "train/task.h"
#include "train/metrics.h"

namespace kiln::test {

struct ToyModel : torch::nn::Module {
  torch::nn::Embedding embed{nullptr};
  torch::nn::Linear fc{nullptr};
  torch::nn::Dropout drop{nullptr};
  ToyModel() {
    embed = register_module("embed", torch::nn::Embedding(32, 16));
    fc = register_module("fc", torch::nn::Linear(16, 3));
    drop = register_module("drop", torch::nn::Dropout(0.2));
  }
  at::Tensor forward(const data::Batch& b) {
    auto mask = b["attention_mask"].unsqueeze(-1).to(at::kFloat);
    auto h = (embed(b["input_ids"]) * mask).sum(1) / mask.sum(1);
    return fc(drop(h));
  }
};

class ToyTask : public train::Task {
 public:
  // Raises SIGTERM in this process during the first forward of step `stop_in_step` (1-based).
  int64_t stop_in_step = 0;
  int64_t accumulation = 1;

  void build(Recipe& r, parallel::World&, parallel::Communicator&) override {
    at::manual_seed(uint64_t(r.train.seed));
    model = std::make_shared<ToyModel>();
    std::mt19937 gen(1234);  // the data never depends on the torch RNG
    for (int split = 0; split < 2; ++split) {
      int n = split == 0 ? 64 : 24;
      for (int i = 0; i < n; ++i) {
        int len = 3 + int(gen() % 6);
        std::vector<int64_t> ids;
        int64_t sum = 0;
        for (int t = 0; t < len; ++t) {
          ids.push_back(1 + int64_t(gen() % 31));
          sum += ids.back();
        }
        examples[split].push_back(ids);
        labels[split].push_back(sum % 3);
      }
    }
  }
  train::NamedTensors trainable() override {
    return {{"embed.weight", model->embed->weight}, {"fc.weight", model->fc->weight}, {"fc.bias", model->fc->bias}};
  }
  void set_training(bool on) override { model->train(on); }
  int64_t size(train::Split s) const override { return int64_t(examples[int(s)].size()); }
  data::Batch collate(train::Split s, const std::vector<int64_t>& idx) override {
    int64_t B = int64_t(idx.size()), T = 0;
    for (auto i : idx) T = std::max<int64_t>(T, int64_t(examples[int(s)][size_t(i)].size()));
    at::Tensor input_ids = at::zeros({B, T}, at::kLong), attention_mask = at::zeros({B, T}, at::kLong);
    at::Tensor label = at::empty({B}, at::kLong), lengths = at::empty({B}, at::kLong);
    for (int64_t r = 0; r < B; ++r) {
      auto& ex = examples[int(s)][size_t(idx[size_t(r)])];
      for (size_t t = 0; t < ex.size(); ++t) {
        input_ids[r][int64_t(t)] = ex[t];
        attention_mask[r][int64_t(t)] = 1;
      }
      label[r] = labels[int(s)][size_t(idx[size_t(r)])];
      lengths[r] = int64_t(ex.size());
    }
    data::Batch b;
    b["input_ids"] = input_ids;
    b["attention_mask"] = attention_mask;
    b["labels"] = label;
    b["example_index"] = at::tensor(idx, at::kLong);
    b["lengths"] = lengths;
    b.num_targets = B;
    return b;
  }
  train::LossSum loss(const data::Batch& b) override {
    ++calls;
    if (stop_in_step > 0 && calls == (stop_in_step - 1) * accumulation + 1) kill(getpid(), SIGTERM);
    auto logits = model->forward(b);
    return {at::cross_entropy_loss(logits, b["labels"], {}, at::Reduction::Sum), b.size()};
  }
  // Pseudo tags per token, for span F1: gold from the ids; predicted ones equal the gold where the
  // example's class is right and are shifted where it is wrong.
  static std::vector<int32_t> tags(const std::vector<int64_t>& ids, bool shift) {
    std::vector<int32_t> t;
    for (size_t i = 0; i < ids.size(); ++i) t.push_back(int32_t((ids[i] + (shift ? 1 : 0)) % 3));  // 0 O, 1 B-X, 2 I-X
    return t;
  }
  train::LossSum evaluate(const data::Batch& b, train::EvalRecords& out) override {
    auto logits = model->forward(b);
    auto prob = logits.softmax(-1);
    auto pred = logits.argmax(-1);
    for (int64_t r = 0; r < b.size(); ++r) {
      int64_t i = b["example_index"][r].item<int64_t>();
      out.example.push_back(i);
      out.ints["pred"].push_back(pred[r].item<int64_t>());
      out.ints["gold"].push_back(labels[1][size_t(i)]);
      // Rounded, so that ties occur and the AUC's tie handling is exercised across ranks.
      out.reals["score"].push_back(std::round(prob[r][1].item<double>() * 10) / 10);
      out.seqs["gold_tags"].push_back(tags(examples[1][size_t(i)], false));
      out.seqs["pred_tags"].push_back(tags(examples[1][size_t(i)], out.ints["pred"].back() != out.ints["gold"].back()));
    }
    return {at::cross_entropy_loss(logits, b["labels"], {}, at::Reduction::Sum), b.size()};
  }
  std::map<std::string, double> metrics(const train::EvalRecords& all) override {
    const auto &pred = all.ints_of("pred"), &gold = all.ints_of("gold");
    auto c = train::class_counts(pred, gold);
    std::vector<int64_t> is1;
    for (auto g : gold) is1.push_back(g == 1);
    static const char* names[] = {"O", "B-X", "I-X"};
    std::vector<std::vector<std::string>> g, p;
    const auto &gold_tags = all.seqs_of("gold_tags"), &pred_tags = all.seqs_of("pred_tags");
    for (size_t i = 0; i < gold_tags.size(); ++i) {
      g.emplace_back();
      p.emplace_back();
      for (auto t : gold_tags[i]) g.back().push_back(names[t]);
      for (auto t : pred_tags[i]) p.back().push_back(names[t]);
    }
    return {{"accuracy", train::accuracy(pred, gold)},
            {"macro_f1", train::macro_f1(c)},
            {"micro_f1", train::micro_f1(c)},
            {"auc", train::auc_roc(all.reals_of("score"), is1)},
            {"span_f1", train::span_prf(train::span_counts(g, p)).f1}};
  }
  std::string main_metric() const override { return "accuracy"; }

  std::shared_ptr<ToyModel> model;
  std::vector<std::vector<int64_t>> examples[2];
  std::vector<int64_t> labels[2];
  int64_t calls = 0;
};

inline Recipe toy_recipe(const std::string& run_dir) {
  Recipe r;
  r.name = "toy";
  r.method = "toy";
  r.train.seed = 5;
  r.train.micro_batch = 4;
  r.train.global_batch = 16;
  r.train.max_steps = 8;
  r.train.lr = 0.05;
  r.train.weight_decay = 0.01;
  r.train.schedule = "cosine";
  r.train.warmup_steps = 2;
  r.train.max_grad_norm = 0.5;
  r.train.log_every = 1;
  r.checkpoint.run_dir = run_dir;
  r.checkpoint.keep = 3;
  r.checkpoint.resume = "none";
  r.log.tensorboard = true;
  r.tree = recipe::parse_string("method: toy\ntrain:\n  lr: 0.05\n", "toy.yaml");
  return r;
}

}  // namespace kiln::test
