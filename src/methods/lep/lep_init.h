// LEP step 2 (../shared/METHODS.md section 3; Tikhomirov & Chernyshev 2024, eq. 1-2): embeddings
// for a new vocabulary from the old model's. A new token's row is the mean, in float32, of the old
// rows of the tokens the OLD tokenizer splits the new token's decoded text into; the input
// embeddings E from the old E and the LM head H, separately, from the old H (even when the old
// model ties them); a token the old vocabulary holds (the same piece, tokenizers of one kind: every
// old id of an Extended vocabulary) and a special token copy the old row of the same string; a
// token whose text the old tokenizer splits into nothing gets the mean of all old rows. A
// SentencePiece piece's text is the piece itself (word mark as a space), encoded as a word's
// continuation (old_pieces_of). Copying is
// what re-encoding would give if a lone piece's decoded text came back as that piece; it does not:
// SentencePiece drops a first piece's word mark on decoding and adds one on encoding ("ing" comes
// back as "▁ing"), and a byte piece decodes to a raw byte, so 419 of stories260K's 512 pieces were
// averaged from other rows before.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::data {
class Tokenizer;
}

namespace kiln::lep {

struct InitCounts {
  int64_t specials_copied = 0;  // by string
  int64_t copied = 0;           // other tokens of the old vocabulary, by piece
  int64_t averaged = 0;         // the mean of their old pieces' rows
  int64_t no_pieces = 0;        // the mean of all rows (specials without an old twin included)
};

// The averaging matrix T of step 2 ([new vocab, old vocab]), row by row: the old ids whose rows'
// mean is new token i's row; an empty row stands for the mean of all old rows.
// The old ids whose rows average into new token `id` (not special, not copied): the OLD
// tokenizer's pieces of the new token's text. For a SentencePiece new vocabulary, the text is the
// piece with its word mark read as a space, encoded as the continuation of a word (after "1", whose
// pieces are then dropped), as the official code does for Mistral: a word-internal piece "ени" is
// averaged from the old pieces of "ени", not of "▁ени". Byte pieces and byte-level BPE vocabularies:
// the old tokenizer's encoding of the decoded token.
std::vector<int32_t> old_pieces_of(const data::Tokenizer& old_tok, const data::Tokenizer& new_tok, int32_t id);

struct Averaging {
  std::vector<std::vector<int64_t>> rows;
  InitCounts counts;
};
Averaging averaging(const data::Tokenizer& old_tok, const data::Tokenizer& new_tok, int64_t old_rows);
// Rows [begin, end) of T M, in M's dtype: M [old vocab, d]; mean_all = M.mean(0).
at::Tensor average_rows(const Averaging& T, const at::Tensor& M, const at::Tensor& mean_all, int64_t begin, int64_t end);

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

// A Hugging Face model folder's weight files and which of them hold E and H (the init and
// propagation steps rewrite those two tensors and copy everything else).
struct ModelFiles {
  std::string dir;
  std::vector<std::string> files;  // single model.safetensors, or the shards of the index
  std::string index_json;          // model.safetensors.index.json as read ("" for a single file)
  std::string e_file, h_file;      // h_file == e_file and tied when there is no lm_head.weight
  bool tied = false;
  at::Tensor E() const;            // mapped views: valid while the files exist
  at::Tensor H() const;
};
ModelFiles model_files(const std::string& model_dir);

// `out_dir` (existing): `in` with E and H replaced (converted to the model's dtype; an untied
// lm_head.weight added where the model tied them), every other weight file copied byte for byte;
// config.json with vocab_size and untied embeddings, and the special ids of `new_tok` where they
// differ from `old_tok` (then generation_config.json, which names ids, is not carried); new_tok's
// tokenizer file and its tokenizer_config.json / special_tokens_map.json.
void write_model(const ModelFiles& in, const at::Tensor& E, const at::Tensor& H, const data::Tokenizer& old_tok,
                 const data::Tokenizer& new_tok, const std::string& out_dir);

}  // namespace kiln::lep
