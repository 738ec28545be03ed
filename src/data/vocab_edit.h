// Editing vocabularies (LEP's Extended tokenizer): a tokenizer plus every token of another that it
// lacks, appended after its ids, so that every old id keeps its meaning.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kiln::data {

class Tokenizer;

struct ExtendSummary {
  int32_t old_size = 0, added = 0, new_size = 0;
  int64_t merges_added = 0;  // byte-level BPE
  int32_t skipped_bytes = 0;  // byte pieces of `add` that a base without byte fallback cannot take
  int32_t filtered = 0;       // tokens of `add` without a letter of the chosen script
  std::string file;           // what was written
};

// Writes the extended tokenizer, of base's kind, into the existing folder `out_dir`:
// - SentencePiece base (tokenizer.model): the model with `add`'s normal and user-defined pieces it
//   lacks appended (protobuf repeated fields concatenate), scored below every old piece in `add`'s
//   order, so old merges keep precedence;
// - byte-level BPE base (tokenizer.json): `add`'s tokens in byte-level form (a SentencePiece
//   piece's word-start mark becomes a space) appended to the vocabulary after every old id, added
//   tokens included (these also enter the vocabulary at their ids), and for each one every merge
//   (left, right) whose halves are in the extended vocabulary, after the old merges in `add`'s order.
// `add` may be SentencePiece or byte-level BPE. Special tokens of `add` are not carried over.
// `script` (e.g. cyrillic, latin, greek, arabic, han; "" for all): only `add`'s tokens holding a
// letter of that script are added, so text without one (the base's own languages, numbers,
// punctuation) is cut exactly as the base cuts it. InputError for an unknown name, listing them.
ExtendSummary extend_tokenizer(const Tokenizer& base, const Tokenizer& add, const std::string& out_dir,
                               const std::string& script);

struct ShrinkSummary {
  int32_t old_size = 0, kept = 0, new_size = 0;  // kept: model tokens (bytes included); new_size: + added tokens
  int64_t merges_kept = 0;
  double corpus_share = 0;  // share of the corpus's tokens (as counted) that are kept tokens
  std::string file;
};

// LEP's Optimized step one, for byte-level BPE (tokenizer.json): keep `keep` tokens of the model
// vocabulary: the 256 byte tokens, then the tokens most frequent by `counts` (one per id of `base`,
// e.g. from encoding a corpus; ties by id), each with the tokens its merge is made of, so that BPE
// can still build it; plus every added token. New ids follow the old order (added tokens last);
// merges whose parts and result are all kept keep their order. Written as tokenizer.json into the
// existing folder `out_dir`. InputError for a SentencePiece base.
ShrinkSummary shrink_tokenizer(const Tokenizer& base, const std::vector<int64_t>& counts, int32_t keep,
                               const std::string& out_dir);

// A Hugging Face tokenizer.json equivalent to the SentencePiece model `model_proto` (a BPE or unigram
// tokenizer.model's bytes; `origin` names it in errors): the model's pieces and scores (BPE merges
// recovered from the scores), its normaliser (precompiled character map, whitespace handling,
// dummy prefix), byte fallback, control and unknown pieces as special added tokens, BOS added by
// the post-processor. Written beside every tokenizer.model kiln makes, so that the `tokenizers`
// library loads it with sentencepiece's ids (tests/data/test_tokenizer_cli.sh checks them).
std::string sentencepiece_tokenizer_json(const std::string& model_proto, const std::string& origin);

// A SentencePiece model proto with `pieces` appended as control pieces (score 0), at ids
// vocab_size, vocab_size + 1, ...: an instruct model's chat tokens carried onto a new vocabulary.
// Like <s>, sentencepiece does not match them in text; kiln's prompts and Hugging Face tokenizers
// (where they are special added tokens) do.
std::string append_control_pieces(const std::string& model_proto, const std::vector<std::string>& pieces);

// The tokens a model folder's tokenizer_config.json names in `added_tokens_decoder`, by id (none
// without the file or the field). A SentencePiece model's chat tokens (OpenChat's <|end_of_turn|>)
// live only there. InputError naming the file for one that is not JSON or a key that is not an id.
std::map<int32_t, std::string> configured_added_tokens(const std::string& model_dir);

// A tokenizer_config.json carried onto the tokenizer `tok` (kiln tokenizer extend/shrink, lep init,
// lep propagate): `added_tokens_decoder` (keyed by id) renumbered by content, and for a
// SentencePiece `tok` the class PreTrainedTokenizerFast, which loads the tokenizer.json kiln writes
// beside every tokenizer.model as it is (transformers' LlamaTokenizer would rebuild a pipeline of
// its own from the vocabulary, without sentencepiece's normalisation map). Text that is not a JSON
// object is returned unchanged.
std::string adapt_tokenizer_config(const std::string& config_json, const Tokenizer& tok);

}  // namespace kiln::data
