// Text generation with a KV cache: greedy or temperature / top-p sampling, stopping at EOS or after
// max_new_tokens. Prompts of a batch are left-padded, so every row continues from its last token.
#pragma once
#include <cstdint>
#include <vector>

#include "model/llama.h"

namespace kiln::model {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy (argmax)
  double top_p = 1.0;        // nucleus sampling: keep the smallest set of tokens with this much mass
  uint64_t seed = 0;         // sampling RNG; the same seed gives the same continuation
  bool stop_at_eos = true;   // stop a row at any of config.json's EOS ids (the EOS is not returned)
  std::vector<int64_t> stop_ids;  // more ids that end a row
};

// Continuations (without the prompts) of each prompt. The model is switched to eval mode for the
// call and restored after. Prompts must be non-empty.
std::vector<std::vector<int64_t>> generate(Llama& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerateOptions& opts);
std::vector<int64_t> generate(Llama& model, const std::vector<int64_t>& prompt, const GenerateOptions& opts);

// Picks the next token from one row of logits [vocab] (float, any device) by `opts`.
int64_t sample_token(const at::Tensor& logits, const GenerateOptions& opts, at::Generator& gen);

}  // namespace kiln::model
