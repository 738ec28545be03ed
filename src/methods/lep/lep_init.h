// LEP step 2 (../shared/METHODS.md section 3; Tikhomirov & Chernyshev 2024, eq. 1-2): embeddings
// for a new vocabulary from the old model's. A new token's row is the mean, in float32, of the old
// rows of the tokens the OLD tokenizer splits the new token's decoded text into; the input
// embeddings E from the old E and the LM head H, separately, from the old H (even when the old
// model ties them); a special token copies the old row of the same string; a token whose text the
// old tokenizer splits into nothing gets the mean of all old rows.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace kiln::data {
class Tokenizer;
}

namespace kiln::lep {

struct InitCounts {
  int64_t specials_copied = 0;  // by string
  int64_t averaged = 0;         // the mean of their old pieces' rows
  int64_t no_pieces = 0;        // the mean of all rows (specials without an old twin included)
};

// Rows for every id of `new_tok` from `old_rows` ([old vocab, d], any floating dtype); the result
// is float32, [new vocab, d].
at::Tensor init_rows(const at::Tensor& old_rows, const data::Tokenizer& old_tok, const data::Tokenizer& new_tok,
                     InitCounts* counts = nullptr);

// A model folder for `new_tokenizer` (a folder or tokenizer file) from the Hugging Face model
// folder `model_dir` (whose own tokenizer is the old one), written into the new folder `out_dir`:
// every weight as it was, except model.embed_tokens.weight and lm_head.weight from init_rows (in
// the model's dtype); config.json with the new vocab_size and untied embeddings; the new
// tokenizer's files. Single-file and sharded (model.safetensors.index.json) weights.
InitCounts init_model(const std::string& model_dir, const std::string& new_tokenizer, const std::string& out_dir);

}  // namespace kiln::lep
