// The two tokenizer implementations behind data::Tokenizer (tokenizer.h): SentencePiece
// (tokenizer.model, through the privately loaded shim) and Hugging Face tokenizer.json with
// byte-level BPE (bpe_tokenizer.cpp). Internal to src/data.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"

namespace kiln::data {

class Tokenizer::Impl {
 public:
  virtual ~Impl() = default;
  virtual std::string kind() const = 0;  // "sentencepiece" | "bpe"
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;  // no BOS/EOS
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::string piece(int32_t id) const = 0;
  virtual int32_t piece_to_id(const std::string& piece) const = 0;  // -1 when absent
  virtual int32_t vocab_size() const = 0;
  virtual int32_t unk_id() const = 0;  // -1: none
  virtual float score(int32_t id) const = 0;
  virtual bool is_byte(int32_t id) const = 0;
  virtual bool is_special(int32_t id) const = 0;
  virtual std::string serialized() const = 0;  // the file's bytes (its checksum names the tokenizer)
  // The file's own special ids (-1 where it names none); config.json may override them.
  int32_t bos = -1, eos = -1, pad = -1;
};

// tokenizer.json of a byte-level BPE model (LLaMA-3, GPT-2 style). InputError naming the file for
// anything it does not implement (another model type, a normalizer, an unknown pre-tokenizer).
std::unique_ptr<Tokenizer::Impl> load_bpe_json(const std::string& path);

// GPT-2's bytes_to_unicode: the UTF-8 of the character that stands for byte `b` in byte-level BPE.
const std::string& byte_level_char(uint8_t b);

}  // namespace kiln::data
