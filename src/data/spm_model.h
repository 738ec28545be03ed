// The fields of a SentencePiece model (sentencepiece_model.proto's ModelProto) that decide how text
// is cut, read from and written to the protocol-buffer bytes of a tokenizer.model without linking
// protobuf (sentencepiece itself is reached only through the privately loaded shim). Internal to
// src/data: spm_json.cpp (tokenizer.json from a tokenizer.model) and gguf_vocab.cpp (GGUF "llama"
// vocabularies) use it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::data {

struct SpmModel {
  struct Piece {
    std::string text;
    float score = 0;
    int type = 1;  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
  };
  std::vector<Piece> pieces;
  // TrainerSpec (proto2 defaults). sentencepiece finds BOS/EOS/UNK/PAD by the *_piece names; the
  // *_id fields are what the trainer assigned and what tokenizer.json conversions read.
  int model_type = 1;  // 1 unigram, 2 bpe, 3 word, 4 char
  bool byte_fallback = false, treat_whitespace_as_suffix = false;
  int64_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  std::string unk_piece = "<unk>", bos_piece = "<s>", eos_piece = "</s>", pad_piece = "<pad>";
  // NormalizerSpec.
  std::string normalizer_name, charsmap;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
};

// Parses a tokenizer.model's bytes; `origin` names it in InputErrors.
SpmModel parse_sentencepiece(const std::string& proto, const std::string& origin);

// The ModelProto bytes of `m`: pieces, the TrainerSpec and NormalizerSpec fields above (fields
// this struct does not hold keep sentencepiece's defaults).
std::string serialize_sentencepiece(const SpmModel& m);

}  // namespace kiln::data
