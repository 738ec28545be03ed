// Pooling on hand-built padded batches: every mode, right and left padding, and padding that holds
// huge values (it must never leak into the result or receive gradient).
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/config.h"
#include "core/error.h"
#include "core/recipe.h"
#include "methods/ls_llama/heads.h"
#include "model/pooling.h"

using namespace kiln::methods::ls_llama;
using namespace kiln::model;

namespace {

constexpr int64_t B = 3, T = 5, H = 4;

// Row 0: 3 real tokens then 2 pads (right padding). Row 1: 3 pads then 2 real tokens (left
// padding). Row 2: no padding. Real hidden values are small distinct numbers; padded positions hold
// 1e6 so any leak shows.
struct Fixture {
  at::Tensor hidden = at::empty({B, T, H});
  at::Tensor mask = at::tensor({1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1}, at::kLong).view({B, T});
  Fixture() {
    auto h = hidden.accessor<float, 3>();
    auto m = mask.accessor<int64_t, 2>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t k = 0; k < H; ++k)
          // a value that is not monotone in t, so max is not just the last token
          h[b][t][k] = m[b][t] ? float((b + 1) * 10 + ((t * 7 + k * 3) % 5) - 2 * k) : 1e6f;
  }
  std::vector<float> real(int64_t b, int64_t k) const {
    std::vector<float> v;
    for (int64_t t = 0; t < T; ++t)
      if (mask[b][t].item<int64_t>()) v.push_back(hidden[b][t][k].item<float>());
    return v;
  }
};

}  // namespace

TEST(Pooling, LastTokenIndexRightLeftAndFull) {
  Fixture f;
  auto idx = last_token_index(f.mask);
  EXPECT_EQ(idx[0].item<int64_t>(), 2);  // right padding: length - 1
  EXPECT_EQ(idx[1].item<int64_t>(), 4);  // left padding: T - 1
  EXPECT_EQ(idx[2].item<int64_t>(), 4);
  // bool masks work the same
  EXPECT_TRUE(last_token_index(f.mask.to(at::kBool)).equal(idx));
}

TEST(Pooling, LastTakesTheLastRealToken) {
  Fixture f;
  auto out = pool(f.hidden, f.mask, Pooling::last);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{B, H}));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < H; ++k) EXPECT_FLOAT_EQ(out[b][k].item<float>(), f.real(b, k).back()) << b << "," << k;
}

TEST(Pooling, MeanOverRealTokensOnly) {
  Fixture f;
  auto out = pool(f.hidden, f.mask, Pooling::mean);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < H; ++k) {
      auto v = f.real(b, k);
      double s = 0;
      for (float x : v) s += x;
      EXPECT_NEAR(out[b][k].item<float>(), s / double(v.size()), 1e-5) << b << "," << k;
    }
}

TEST(Pooling, MaxOverRealTokensOnly) {
  Fixture f;
  auto out = pool(f.hidden, f.mask, Pooling::max);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < H; ++k) {
      auto v = f.real(b, k);
      EXPECT_FLOAT_EQ(out[b][k].item<float>(), *std::max_element(v.begin(), v.end())) << b << "," << k;
    }
  // All-negative real values: a zero-filled pad would win if padding were zeroed instead of masked.
  auto neg = pool(-f.hidden.abs() - 1, f.mask, Pooling::max);
  EXPECT_TRUE((neg < 0).all().item<bool>());
}

TEST(Pooling, SameSequenceRightOrLeftPaddedPoolsTheSame) {
  // One sequence of 3 tokens, once right-padded and once left-padded to 6.
  at::Tensor seq = at::randn({3, H});
  at::Tensor right = at::cat({seq, at::full({3, H}, 123.0)}, 0).unsqueeze(0);
  at::Tensor left = at::cat({at::full({3, H}, -77.0), seq}, 0).unsqueeze(0);
  at::Tensor mr = at::tensor({1, 1, 1, 0, 0, 0}, at::kLong).unsqueeze(0);
  at::Tensor ml = at::tensor({0, 0, 0, 1, 1, 1}, at::kLong).unsqueeze(0);
  for (Pooling p : {Pooling::last, Pooling::mean, Pooling::max}) {
    auto a = pool(right, mr, p), b = pool(left, ml, p), c = pool(seq.unsqueeze(0), at::ones({1, 3}, at::kLong), p);
    EXPECT_TRUE(at::allclose(a, b)) << pooling_name(p);
    EXPECT_TRUE(at::allclose(a, c)) << pooling_name(p);
  }
}

TEST(Pooling, NoGradientReachesPadding) {
  Fixture f;
  for (Pooling p : {Pooling::last, Pooling::mean, Pooling::max}) {
    at::Tensor h = f.hidden.clone().set_requires_grad(true);
    pool(h, f.mask, p).sum().backward();
    at::Tensor g = h.grad();
    at::Tensor pad = f.mask.eq(0).unsqueeze(-1).expand_as(g);
    EXPECT_EQ(g.masked_select(pad).abs().sum().item<float>(), 0.f) << pooling_name(p);
    // every row receives some gradient on its real tokens
    EXPECT_TRUE((g.abs().sum({1, 2}) > 0).all().item<bool>()) << pooling_name(p);
    if (p == Pooling::mean) {  // 1 / length on each real token
      EXPECT_FLOAT_EQ(g[0][0][0].item<float>(), 1.f / 3);
      EXPECT_FLOAT_EQ(g[1][4][0].item<float>(), 1.f / 2);
    }
    if (p == Pooling::last) {
      EXPECT_FLOAT_EQ(g[1][4].sum().item<float>(), float(H));
    }
  }
}

TEST(Pooling, KeepsBf16) {
  Fixture f;
  for (Pooling p : {Pooling::last, Pooling::mean, Pooling::max})
    EXPECT_EQ(pool(f.hidden.to(at::kBFloat16), f.mask, p).scalar_type(), at::kBFloat16);
}

TEST(Pooling, RowWithoutTokensIsAnError) {
  Fixture f;
  at::Tensor m = f.mask.clone();
  m[1].zero_();
  for (Pooling p : {Pooling::last, Pooling::mean, Pooling::max}) EXPECT_THROW(pool(f.hidden, m, p), kiln::InternalError);
}

TEST(Pooling, ParseNames) {
  EXPECT_EQ(parse_pooling("last"), Pooling::last);
  EXPECT_EQ(parse_pooling("mean"), Pooling::mean);
  EXPECT_EQ(parse_pooling("max"), Pooling::max);
  try {
    parse_pooling("cls", "r.yaml:3: key `task.pooling`");
    FAIL();
  } catch (const kiln::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("r.yaml:3"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("cls"), std::string::npos);
  }
}

TEST(Heads, ShapesNamesAndDropout) {
  at::manual_seed(0);
  Head seq = sequence_head(H, 3, 0.5, 0.02, at::kCPU);
  Head tok = token_head(H, 9, 0.5, 0.02, at::kCPU);
  EXPECT_EQ(seq->named_parameters().size(), 1u);  // score: no bias, as transformers' LlamaForSequenceClassification
  EXPECT_EQ(tok->named_parameters().size(), 2u);
  EXPECT_TRUE(tok->bias.eq(0).all().item<bool>());
  EXPECT_NEAR(tok->weight.std().item<float>(), 0.02, 0.01);

  at::Tensor x = at::randn({2, 5, H}, at::kBFloat16);
  at::Tensor y = tok->forward(x);
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{2, 5, 9}));
  EXPECT_EQ(y.scalar_type(), at::kFloat);

  // eval mode: deterministic and exactly linear
  seq->eval();
  at::Tensor p = at::randn({4, H});
  EXPECT_TRUE(seq->forward(p).equal(seq->forward(p)));
  EXPECT_TRUE(at::allclose(seq->forward(p), at::matmul(p, seq->weight.t())));
  // training mode with p = 0.5: some outputs change between calls
  seq->train();
  at::Tensor big = at::randn({64, H});
  EXPECT_FALSE(seq->forward(big).equal(seq->forward(big)));
}

// Issue 32, point 8: 4AI/LS-LLaMA modeling_llama.py (UnmaskingLlamaForSequenceClassification @
// 95a67cd) applies `score` at every position and then pools the logits over all T, pads included.
// Hand-computed on one row: real states (1, 0) and (0, 2), then a pad state (5, 5); score rows
// (1, 1) and (1, -1), so the per-position logits are (1, 1), (2, -2) and the pad's (10, 0).
TEST(Heads, SequenceLogitsPoolTheLogitsAsTheOfficialCode) {
  Head seq = sequence_head(2, 2, 0.0, 0.02, at::kCPU);
  {
    at::NoGradGuard ng;
    seq->weight.copy_(at::tensor({1.0f, 1.0f, 1.0f, -1.0f}).view({2, 2}));
  }
  seq->eval();
  at::Tensor hidden = at::tensor({1.0f, 0.0f, 0.0f, 2.0f, 5.0f, 5.0f}).view({1, 3, 2});
  at::Tensor mask = at::tensor({1, 1, 0}, at::kLong).view({1, 3});
  auto row = [](const at::Tensor& t) { return std::vector<float>{t[0][0].item<float>(), t[0][1].item<float>()}; };
  using V = std::vector<float>;
  // max: per class over the real positions' logits (2, 1); the head on the max state would give (3, -1).
  EXPECT_EQ(row(sequence_logits(*seq, hidden, mask, Pooling::max, false)), (V{2.0f, 1.0f}));
  // pads pooled, as the official LS-unLLaMA: the pad's logits count.
  EXPECT_EQ(row(sequence_logits(*seq, hidden, mask, Pooling::max, true)), (V{10.0f, 1.0f}));
  auto mean_official = row(sequence_logits(*seq, hidden, mask, Pooling::mean, true));
  EXPECT_NEAR(mean_official[0], 13.0f / 3.0f, 1e-6);
  EXPECT_NEAR(mean_official[1], -1.0f / 3.0f, 1e-6);
  EXPECT_EQ(row(sequence_logits(*seq, hidden, mask, Pooling::mean, false)), (V{1.5f, -0.5f}));
  // last: the last real token either way (the official finds it from the first pad).
  EXPECT_EQ(row(sequence_logits(*seq, hidden, mask, Pooling::last, true)), (V{2.0f, -2.0f}));
  EXPECT_EQ(row(sequence_logits(*seq, hidden, mask, Pooling::last, false)), (V{2.0f, -2.0f}));
}

// Issue 32, points 8 and 9: the paper recipes carry the official scripts' settings (4AI/LS-LLaMA
// unllama_seq_clf.py @ c60a58d: lr 1e-4, 20 epochs; modeling_llama.py @ 95a67cd: no padding mask in
// UnmaskingLlamaModel, no dropout before `score`, dropout 0.1 before `classifier`).
TEST(PaperRecipes, OfficialSettings) {
  ::setenv("KILN_DATA_DIR", "/data", 1);
  auto task = [](const kiln::Recipe& r, const std::string& key) {
    const kiln::recipe::Node* t = r.tree.find("task");
    const kiln::recipe::Node* v = t ? t->find(key) : nullptr;
    return v ? v->scalar : std::string("(unset)");
  };
  const std::string dir = std::string(KILN_SOURCE_DIR) + "/recipes/ls_llama/";
  for (const char* ds : {"sst2", "sst5", "agnews", "twitterfin"}) {
    kiln::Recipe un = kiln::read_recipe(dir + ds + "_unllama.yaml", {});
    EXPECT_EQ(un.model.attention, "bidirectional") << ds;
    EXPECT_EQ(task(un, "pads"), "attended") << ds;
    EXPECT_DOUBLE_EQ(un.train.lr, 1e-4) << ds;
    EXPECT_DOUBLE_EQ(un.train.epochs, 20) << ds;
    EXPECT_EQ(task(un, "head_dropout"), "0.0") << ds;
    EXPECT_EQ(un.train.eval_every, kiln::kEvalEveryEpoch) << ds;
    EXPECT_EQ(un.checkpoint.keep_best, "loss") << ds;  // load_best_model_at_end=True
    EXPECT_EQ(un.checkpoint.best_mode, "min") << ds;
    kiln::Recipe ls = kiln::read_recipe(dir + ds + ".yaml", {});
    EXPECT_EQ(task(ls, "pads"), "(unset)") << ds;  // LS-LLaMA keeps transformers' padding mask
    EXPECT_EQ(task(ls, "head_dropout"), "0.0") << ds;
    EXPECT_EQ(ls.train.eval_every, kiln::kEvalEveryEpoch) << ds;
    EXPECT_EQ(ls.checkpoint.keep_best, "") << ds;  // llama_seq_clf.py: load_best_model_at_end=False
  }
  kiln::Recipe sst5 = kiln::read_recipe(dir + "sst5.yaml", {});
  EXPECT_NE(sst5.data.eval.find("setfit/test.jsonl"), std::string::npos) << sst5.data.eval;
  for (const char* ner : {"conll2003", "conll2003_unllama"}) {
    kiln::Recipe r = kiln::read_recipe(dir + ner + ".yaml", {});
    EXPECT_EQ(task(r, "head_dropout"), "0.1") << ner;
    EXPECT_EQ(r.checkpoint.keep_best, "loss") << ner;  // both token scripts keep the best epoch
    EXPECT_EQ(r.train.eval_every, kiln::kEvalEveryEpoch) << ner;
  }
  EXPECT_EQ(task(kiln::read_recipe(dir + "conll2003_unllama.yaml", {}), "pads"), "attended");
}
