// A GGUF file's tokenizer (the `tokenizer.*` metadata llama.cpp reads) to and from the Hugging Face
// tokenizer files of a kiln model folder. GGUF stores a vocabulary, not a pipeline: the token list,
// their types, BPE merges or SentencePiece scores, special ids and flags, and a pre-tokenizer *name*
// (`tokenizer.ggml.pre`) that stands for the regexes llama.cpp runs before BPE. kiln turns that
// name into the tokenizer.json pre-tokenizer that cuts text as llama.cpp does, from a table of the
// names it knows (gguf_vocab.cpp); a model type or name outside the table is an InputError.
//
// Supported:
// - tokenizer.ggml.model "gpt2" (byte-level BPE): tokenizer.json with the pre name's pre-tokenizer,
//   the vocabulary and merges; CONTROL (3) and UNKNOWN (2) tokens become special added tokens,
//   USER_DEFINED (4) ones non-special added tokens (llama.cpp matches all of them whole in text).
// - tokenizer.ggml.model "llama" (SentencePiece: pieces, scores, types, byte pieces `<0x0A>`):
//   a SentencePiece BPE tokenizer.model rebuilt from them (identity normaliser, dummy prefix from
//   add_space_prefix, no whitespace removal: what llama.cpp does), which kiln loads, and its
//   tokenizer.json (merges recovered from the scores, as transformers does) for other libraries.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kiln::gguf {
class File;
class Writer;
}  // namespace kiln::gguf

namespace kiln::data {

struct HfTokenizerFiles {
  nlohmann::json tokenizer_json, tokenizer_config, special_tokens_map;
  // The tokenizer.model bytes for a "llama" (SentencePiece) vocabulary; empty for byte-level BPE.
  // kiln's tokenizer loads tokenizer.model when a folder has one (kiln reads tokenizer.json only
  // for byte-level BPE), so a folder made from a "llama" GGUF needs this file beside the others.
  std::string tokenizer_model;
  int64_t bos_id = -1, eos_id = -1, pad_id = -1, unk_id = -1;  // -1: the file names none
};

// The tokenizer files of the vocabulary in `f`. `model_max_length` > 0 is written into
// tokenizer_config.json. InputError naming the file and key for a model type or pre-tokenizer
// name kiln does not know, and for metadata that does not fit together (lengths, ids, merges).
HfTokenizerFiles tokenizer_from_gguf(const gguf::File& f, int64_t model_max_length = 0);

// The reverse, for `kiln export --gguf`: sets tokenizer.ggml.{model, pre, tokens, token_type,
// merges | scores, bos/eos/unknown/padding_token_id, add_bos_token, add_eos_token,
// add_space_prefix (llama)} and tokenizer.chat_template from the tokenizer of the kiln model
// folder `model_dir`, chosen as kiln's loader chooses it: tokenizer.model (SentencePiece BPE), else
// tokenizer.json (byte-level BPE, whose pre-tokenizer must be one of a known GGUF pre name).
// Special ids come from tokenizer_config.json, overridden by config.json as kiln's model loader
// does. `vocab_size` larger than the tokenizer's pads the list with UNUSED `[PAD<id>]` tokens, as
// llama.cpp's converter does for an embedding with spare rows. InputError naming the file for a
// tokenizer GGUF cannot express (a unigram or normalising SentencePiece model, a normalizer, a
// pre-tokenizer without a GGUF name).
void tokenizer_to_gguf(const std::string& model_dir, gguf::Writer& w, int64_t vocab_size = 0);

// The tokenizer.ggml.pre names tokenizer_from_gguf knows, in the order its errors list them.
std::vector<std::string> gguf_pre_names();

}  // namespace kiln::data
