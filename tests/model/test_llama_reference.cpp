// The model against the real stories260K checkpoint: logits against an independent float64 forward,
// greedy decoding against the ids llama2.c's own run produced, the KV cache against full recompute.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cstdlib>

#include "data/tokenizer.h"
#include "model/generate.h"
#include "model/hf_io.h"
#include "reference.h"

using namespace kiln::model;

namespace {

const std::string kHf = std::string(KILN_SHARED_DIR) + "/models/stories260K/hf";

double max_diff_vs_reference(Llama& m, const kiln_test::RefLlama& ref, const std::vector<int64_t>& ids) {
  at::NoGradGuard ng;
  at::Tensor logits = m->forward(at::tensor(ids, at::kLong).view({1, -1}))[0];
  auto r = ref.forward(ids);
  double worst = 0;
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t v = 0; v < ref.vocab; ++v)
      worst = std::max(worst, std::abs(double(logits[int64_t(t)][v].item<float>()) - r[t][size_t(v)]));
  return worst;
}

}  // namespace

TEST(LlamaReference, LogitsMatchFloat64Reference) {
  at::manual_seed(0);
  Llama m = load_pretrained(kHf);
  m->eval();
  kiln_test::RefLlama ref(kHf);
  auto tok = load_tokenizer(kHf);
  std::vector<std::vector<int64_t>> prompts;
  for (const char* text : {"Once upon a time", "The little dog ran to the park and saw a big red ball. He was happy.",
                           "Lily and Tom were friends. One day"}) {
    auto ids = tok.encode(text, true);
    prompts.emplace_back(ids.begin(), ids.end());
  }
  prompts.push_back({1});
  // Random ids over the whole vocabulary, long enough to exercise positions beyond typical prompts.
  at::Tensor rnd = at::randint(3, 512, {96}, at::kLong);
  std::vector<int64_t> r(rnd.data_ptr<int64_t>(), rnd.data_ptr<int64_t>() + 96);
  r.insert(r.begin(), 1);
  prompts.push_back(r);
  for (const auto& p : prompts) {
    double d = max_diff_vs_reference(m, ref, p);
    std::printf("prompt of %zu tokens: max |logit - float64 reference| = %.3g\n", p.size(), d);
    EXPECT_LT(d, 1e-4) << "prompt of " << p.size() << " tokens";
  }
}

// Attention runs through scaled_dot_product_attention (fused kernels): a padded batch, right- and
// left-padded rows, causal (is_causal or an additive mask) and bidirectional (LS-unLLaMA), against the
// float64 forward of each sequence alone. KILN_TEST_DEVICE=cuda runs it on a GPU.
TEST(LlamaReference, SdpaAttentionMatchesFloat64ReferenceWithPadding) {
  const char* env = std::getenv("KILN_TEST_DEVICE");
  const c10::Device dev(env && *env ? env : "cpu");
  Llama m = load_pretrained(kHf, at::kFloat, dev);
  m->eval();
  kiln_test::RefLlama ref(kHf);
  at::manual_seed(1);
  const std::vector<int64_t> lens = {40, 17, 29};
  const int64_t T = 40, B = int64_t(lens.size());
  std::vector<std::vector<int64_t>> seqs;
  for (int64_t n : lens) {
    at::Tensor r = at::randint(3, 512, {n}, at::kLong);
    std::vector<int64_t> s(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + n);
    s[0] = 1;
    seqs.push_back(s);
  }
  at::NoGradGuard ng;
  for (bool causal : {true, false}) {
    m->set_attention_mode(causal ? AttentionMode::causal : AttentionMode::bidirectional);
    for (bool left : {false, true}) {
      at::Tensor ids = at::zeros({B, T}, at::kLong), mask = at::zeros({B, T}, at::kLong);
      for (int64_t b = 0; b < B; ++b) {
        const int64_t n = lens[size_t(b)], off = left ? T - n : 0;
        for (int64_t t = 0; t < n; ++t) ids[b][off + t] = seqs[size_t(b)][size_t(t)];
        mask[b].narrow(0, off, n).fill_(1);
      }
      at::Tensor logits = m->forward(ids.to(dev), mask.to(dev)).to(at::kCPU).to(at::kDouble);
      double worst = 0;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t n = lens[size_t(b)], off = left ? T - n : 0;
        auto r = ref.forward(seqs[size_t(b)], causal);
        for (int64_t t = 0; t < n; ++t) {
          at::Tensor want = at::tensor(r[size_t(t)], at::kDouble);
          worst = std::max(worst, (logits[b][off + t] - want).abs().max().item<double>());
        }
      }
      std::printf("%s, %s-padded batch on %s: max |logit - float64 reference| = %.3g\n",
                  causal ? "causal" : "bidirectional", left ? "left" : "right", dev.str().c_str(), worst);
      EXPECT_LT(worst, 1e-4) << (causal ? "causal" : "bidirectional") << (left ? " left" : " right");
    }
    // Unpadded: the causal case takes SDPA's is_causal path with no mask tensor.
    at::Tensor one = at::tensor(seqs[0], at::kLong).view({1, -1});
    at::Tensor logits = m->forward(one.to(dev)).to(at::kCPU).to(at::kDouble)[0];
    auto r = ref.forward(seqs[0], causal);
    double worst = 0;
    for (int64_t t = 0; t < lens[0]; ++t)
      worst = std::max(worst, (logits[t] - at::tensor(r[size_t(t)], at::kDouble)).abs().max().item<double>());
    EXPECT_LT(worst, 1e-4) << (causal ? "causal" : "bidirectional") << " unpadded";
  }
}

TEST(LlamaReference, GreedyFromBosReproducesLlama2c) {
  Llama m = load_pretrained(kHf);
  GenerateOptions o;
  o.max_new_tokens = 16;
  auto out = generate(m, std::vector<int64_t>{1}, o);
  std::vector<int64_t> expected = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338};
  EXPECT_EQ(out, expected);
  auto tok = load_tokenizer(kHf);
  std::vector<int32_t> ids(out.begin(), out.end());
  EXPECT_EQ(tok.decode(ids).rfind("Once upon a time", 0), 0u) << tok.decode(ids);
}

TEST(LlamaReference, KvCacheMatchesFullRecompute) {
  Llama m = load_pretrained(kHf);
  m->eval();
  at::NoGradGuard ng;
  auto tok = load_tokenizer(kHf);
  auto p32 = tok.encode("Tom had a red car", true);
  std::vector<int64_t> prompt(p32.begin(), p32.end());
  GenerateOptions o;
  o.max_new_tokens = 40;
  o.stop_at_eos = false;
  auto cached = generate(m, prompt, o);
  std::vector<int64_t> seq = prompt, slow;
  for (int i = 0; i < 40; ++i) {
    at::Tensor l = m->forward(at::tensor(seq, at::kLong).view({1, -1}))[0][int64_t(seq.size()) - 1];
    slow.push_back(l.argmax().item<int64_t>());
    seq.push_back(slow.back());
  }
  EXPECT_EQ(cached, slow);

  // A batch of prompts of different lengths (left-padded inside) continues each as if alone.
  auto q32 = tok.encode("Once upon a time, there was a big", true);
  std::vector<int64_t> other(q32.begin(), q32.end());
  auto batch = generate(m, {prompt, other, {1}}, o);
  EXPECT_EQ(batch[0], cached);
  EXPECT_EQ(batch[1], generate(m, other, o));
  EXPECT_EQ(batch[2], generate(m, std::vector<int64_t>{1}, o));
}

TEST(LlamaReference, SamplingIsSeededAndTopPRestricts) {
  Llama m = load_pretrained(kHf);
  GenerateOptions o;
  o.max_new_tokens = 24;
  o.temperature = 1.0;
  o.top_p = 0.9;
  o.seed = 7;
  auto a = generate(m, std::vector<int64_t>{1}, o), b = generate(m, std::vector<int64_t>{1}, o);
  EXPECT_EQ(a, b);
  o.seed = 8;
  auto c = generate(m, std::vector<int64_t>{1}, o);
  EXPECT_NE(a, c);
  // top_p tiny keeps only the argmax: sampling equals greedy.
  o.top_p = 1e-6;
  GenerateOptions g;
  g.max_new_tokens = 24;
  EXPECT_EQ(generate(m, std::vector<int64_t>{1}, o), generate(m, std::vector<int64_t>{1}, g));
  // sample_token draws only from the nucleus.
  at::Tensor logits = at::tensor(std::vector<float>{5.0f, 4.9f, 0.0f, -1.0f});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  GenerateOptions s;
  s.temperature = 1.0;
  s.top_p = 0.5;
  for (int i = 0; i < 50; ++i) EXPECT_LE(sample_token(logits, s, gen), 1);
}
