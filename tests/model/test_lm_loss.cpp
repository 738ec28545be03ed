// The chunked LM loss (model/lm_loss.h) against the whole batch's logits: the same loss, gradients
// of every trainable tensor and evaluation counts, on random untied and tied models, with LoRA on
// the head, under bf16 autocast; and each parameter's gradient hook runs once.
#include <gtest/gtest.h>

#include <map>

#include "core/config.h"
#include "model/lm_loss.h"
#include "model/lora.h"
#include "random_model.h"
#include "train/autocast.h"

using namespace kiln::model;

namespace {

constexpr int64_t kIgnore = -100;

using kiln_test::random_model;

struct Batch {
  at::Tensor ids, labels;
};

// 3 rows of 17 tokens; about a third of the positions have no target (prompts, padding).
Batch batch() {
  at::manual_seed(11);
  Batch b;
  b.ids = at::randint(0, 300, {3, 17}, at::kLong);
  b.labels = at::randint(0, 300, {3, 16}, at::kLong);
  b.labels.masked_fill_(at::rand({3, 16}) < 0.35, kIgnore);
  b.labels[2].fill_(kIgnore);  // a row without targets
  return b;
}

struct Outcome {
  double loss = 0;
  int64_t targets = 0;
  std::map<std::string, at::Tensor> grads;
};

Outcome run(Llama& m, const Batch& b, int64_t chunk, bool bf16 = false) {
  for (auto& p : m->parameters())
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  Outcome r;
  {
    kiln::train::Autocast ac(bf16, at::kCPU);
    at::Tensor h = m->hidden_states(b.ids, at::ones_like(b.ids));
    LmLoss l = lm_loss(m, h.narrow(1, 0, 16), b.labels, kIgnore, chunk, false);
    r.loss = l.sum.item<double>();
    r.targets = l.targets;
    l.sum.backward();
  }
  for (const auto& item : m->named_parameters())
    if (item.value().requires_grad())
      r.grads[item.key()] = item.value().grad().defined() ? item.value().grad().clone() : at::zeros_like(item.value());
  return r;
}

void expect_same(const Outcome& chunked, const Outcome& full, double tol) {
  EXPECT_EQ(chunked.targets, full.targets);
  EXPECT_NEAR(chunked.loss, full.loss, tol * std::abs(full.loss));
  ASSERT_EQ(chunked.grads.size(), full.grads.size());
  for (auto& [n, g] : full.grads) {
    const double scale = std::max(1e-3, g.abs().max().item<double>());
    EXPECT_LE((chunked.grads.at(n) - g).abs().max().item<double>(), tol * scale) << n;
  }
}

}  // namespace

TEST(LmLoss, ChunksGiveTheFullLogitsLossAndGradients) {
  for (bool tied : {false, true}) {
    Llama m = random_model(tied);  // full fine-tuning: every tensor, the head included, trains
    const Batch b = batch();
    const Outcome full = run(m, b, 0);
    EXPECT_GT(full.targets, 10);
    EXPECT_LT(full.targets, 32);
    for (int64_t chunk : {1, 7, 1000}) {  // many chunks, a few, and one
      SCOPED_TRACE(testing::Message() << "tied " << tied << " chunk " << chunk);
      expect_same(run(m, b, chunk), full, 1e-5);
    }
  }
}

TEST(LmLoss, LoraOnTheHeadAndUnderBf16Autocast) {
  Llama m = random_model(false);
  // Recipes cannot put LoRA on lm_head today (lora.target_modules names decoder projections), but
  // the loss takes the head as LinearImpl computes it, adapter included.
  kiln::LoraConfig cfg;
  cfg.enabled = true;
  cfg.r = 4;
  cfg.alpha = 8;
  cfg.dropout = 0;
  cfg.target_modules = {"q_proj"};
  apply_lora(m, cfg, {});
  m->lm_head->add_lora(4, 8, 0);
  {
    at::NoGradGuard ng;
    for (auto& [n, p] : lora_parameters(m))
      if (n.find("lora_B") != std::string::npos) p.normal_(0, 0.05);  // B = 0 would hide the head's adapter
  }
  const Batch b = batch();
  const Outcome full = run(m, b, 0);
  EXPECT_TRUE(full.grads.count("lm_head.lora_A.weight"));
  EXPECT_GT(full.grads.at("lm_head.lora_A.weight").abs().max().item<double>(), 0);
  expect_same(run(m, b, 5), full, 1e-5);
  const Outcome full16 = run(m, b, 0, true);
  // Under bf16 autocast each chunk's weight gradient is a bf16 product rounded on its own (bf16 keeps
  // 8 bits: 3.9e-3 relative) before the chunks are summed: measured 3e-3 of the largest entry here.
  expect_same(run(m, b, 5, true), full16, 1e-2);
}

TEST(LmLoss, EachGradientHookRunsOnce) {
  Llama m = random_model(false);
  std::map<std::string, int> calls;
  for (const auto& item : m->named_parameters()) {
    const std::string name = item.key();
    item.value().register_hook([&calls, name](const at::Tensor&) { ++calls[name]; });
  }
  run(m, batch(), 3);
  for (const auto& item : m->named_parameters()) EXPECT_EQ(calls[item.key()], 1) << item.key();
}

TEST(LmLoss, EvaluationCountsPerRow) {
  Llama m = random_model(false);
  const Batch b = batch();
  at::NoGradGuard ng;
  at::Tensor h = m->hidden_states(b.ids, at::ones_like(b.ids)).narrow(1, 0, 16);
  LmLoss full = lm_loss(m, h, b.labels, kIgnore, 0, true);
  LmLoss chunked = lm_loss(m, h, b.labels, kIgnore, 4, true);
  EXPECT_NEAR(chunked.sum.item<double>(), full.sum.item<double>(), 1e-5 * full.sum.item<double>());
  EXPECT_TRUE(at::equal(chunked.correct_per_row, full.correct_per_row));
  EXPECT_TRUE(at::equal(chunked.targets_per_row, full.targets_per_row));
  EXPECT_EQ(chunked.targets_per_row[2].item<int64_t>(), 0);
}

TEST(LmLoss, AutoChunkKeepsAChunkNear64MiB) {
  EXPECT_EQ(auto_chunk_rows(128256), 130);  // 130 x 128,256 x 4 bytes = 63.6 MiB
  EXPECT_EQ(auto_chunk_rows(49152), 341);
  EXPECT_EQ(auto_chunk_rows(1 << 30), 64);
}
