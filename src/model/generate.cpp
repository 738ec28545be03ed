#include "model/generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"

namespace kiln::model {

int64_t sample_token(const at::Tensor& logits, const GenerateOptions& opts, at::Generator& gen) {
  at::Tensor l = logits.detach().to(at::kCPU, at::kFloat);
  if (opts.temperature <= 0) return l.argmax().item<int64_t>();
  at::Tensor probs = at::softmax(l / opts.temperature, -1);
  if (opts.top_p < 1.0) {
    // transformers' TopPLogitsWarper: drop the tail whose cumulative mass (in descending order)
    // exceeds top_p, always keeping the most likely token.
    auto sorted = probs.sort(-1, /*descending=*/true);
    at::Tensor p = std::get<0>(sorted), idx = std::get<1>(sorted);
    at::Tensor before = p.cumsum(-1) - p;  // mass of the tokens ranked above each one
    at::Tensor keep = before < opts.top_p;
    keep[0] = true;
    at::Tensor kept = at::zeros_like(probs).scatter_(-1, idx, p * keep.to(at::kFloat));
    probs = kept / kept.sum();
  }
  return at::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

std::vector<std::vector<int64_t>> generate(Llama& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerateOptions& opts) {
  if (prompts.empty()) return {};
  const auto& cfg = model->config();
  const int64_t B = int64_t(prompts.size());
  int64_t longest = 0;
  for (const auto& p : prompts) {
    if (p.empty()) input_error("generate: empty prompt (start it with BOS id {})", cfg.bos_token_id);
    for (int64_t id : p)
      if (id < 0 || id >= cfg.vocab_size) input_error("generate: token id {} is outside the vocabulary [0, {})", id, cfg.vocab_size);
    longest = std::max<int64_t>(longest, int64_t(p.size()));
  }
  // Positions past the context were never trained (and RoPE scaling tables end there).
  if (longest + opts.max_new_tokens > cfg.max_position_embeddings)
    input_error("generate: a prompt of {} tokens and {} new ones exceed the model's context of {} "
                "(max_position_embeddings in {}); ask for at most {} new tokens",
                longest, opts.max_new_tokens, cfg.max_position_embeddings, cfg.source.empty() ? "config.json" : cfg.source,
                std::max<int64_t>(0, cfg.max_position_embeddings - longest));
  const bool was_training = model->is_training();
  model->eval();
  at::NoGradGuard no_grad;
  const auto dev = model->device();
  const int64_t pad = cfg.pad_token_id >= 0 ? cfg.pad_token_id : cfg.eos();
  at::Tensor ids = at::full({B, longest}, pad, at::kLong), mask = at::zeros({B, longest}, at::kLong);
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[size_t(b)];
    const int64_t off = longest - int64_t(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      ids[b][off + int64_t(i)] = p[i];
      mask[b][off + int64_t(i)] = 1;
    }
  }
  KVCache cache = model->new_cache(B, longest + opts.max_new_tokens);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(opts.seed);
  auto stops = [&](int64_t id) {
    if (opts.stop_at_eos && cfg.is_eos(id)) return true;
    return std::find(opts.stop_ids.begin(), opts.stop_ids.end(), id) != opts.stop_ids.end();
  };

  std::vector<std::vector<int64_t>> out(static_cast<size_t>(B));
  // Row r of the running batch continues prompt rows[r]; finished rows leave the batch (their KV
  // cache rows too) once they are half of it, so a long answer does not keep the whole batch busy.
  std::vector<int64_t> rows(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) rows[size_t(b)] = b;
  at::Tensor h = model->hidden_states_cached(ids.to(dev), cache, mask.to(dev));
  at::Tensor last = model->logits(h.narrow(1, longest - 1, 1)).squeeze(1);  // [rows, V]
  std::vector<bool> finished(static_cast<size_t>(B), false);  // per running row, until compaction
  for (int64_t step = 0; step < opts.max_new_tokens; ++step) {
    const int64_t n = int64_t(rows.size());
    at::Tensor greedy;
    if (opts.temperature <= 0) greedy = last.argmax(-1).to(at::kCPU).contiguous();  // one argmax over the batch
    const int64_t* g = greedy.defined() ? greedy.data_ptr<int64_t>() : nullptr;
    std::vector<int64_t> live, picks(static_cast<size_t>(n), pad);  // rows still generating, tokens
    for (int64_t r = 0; r < n; ++r) {
      if (finished[size_t(r)]) continue;
      const int64_t t = g ? g[r] : sample_token(last[r], opts, gen);
      if (stops(t)) {
        finished[size_t(r)] = true;
        continue;
      }
      out[size_t(rows[size_t(r)])].push_back(t);
      picks[size_t(r)] = t;
      live.push_back(r);
    }
    if (live.empty() || step + 1 == opts.max_new_tokens) break;
    if (2 * int64_t(live.size()) <= n) {
      at::Tensor keep = at::tensor(live, at::kLong).to(dev);
      for (auto& l : cache.layers) {
        l.k = l.k.index_select(0, keep);
        l.v = l.v.index_select(0, keep);
      }
      cache.mask = cache.mask.index_select(0, keep);
      std::vector<int64_t> kept_rows, kept_picks;
      for (int64_t r : live) kept_rows.push_back(rows[size_t(r)]), kept_picks.push_back(picks[size_t(r)]);
      rows = std::move(kept_rows);
      picks = std::move(kept_picks);
      finished.assign(rows.size(), false);
    }
    // Finished rows not yet compacted away are fed padding that nothing reads.
    at::Tensor step_ids = at::tensor(picks, at::kLong).view({int64_t(picks.size()), 1}).to(dev);
    h = model->hidden_states_cached(step_ids, cache);
    last = model->logits(h).squeeze(1);
  }
  if (was_training) model->train();
  return out;
}

std::vector<int64_t> generate(Llama& model, const std::vector<int64_t>& prompt, const GenerateOptions& opts) {
  return generate(model, std::vector<std::vector<int64_t>>{prompt}, opts)[0];
}

}  // namespace kiln::model
