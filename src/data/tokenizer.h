// The model's tokenizer, chosen by what the model folder holds: tokenizer.model (SentencePiece,
// reached through a privately loaded shim: see spm_shim.cpp) when present, else tokenizer.json
// with byte-level BPE (LLaMA-3; bpe_tokenizer.cpp). No library type appears here.
// BOS/EOS/pad ids come from the tokenizer files (the sentencepiece model; tokenizer_config.json),
// overridable from config.json; LLaMA has no pad token, so pad falls back to EOS (padding is always
// masked, so the id only has to be valid).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln::data {

class Tokenizer {
 public:
  // Loads `path`: a tokenizer.model, a tokenizer.json, or a folder holding one of them (both:
  // tokenizer.model). Throws InputError naming the file.
  explicit Tokenizer(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  std::vector<int32_t> encode(const std::string& text, bool add_bos = true, bool add_eos = false) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;
  int32_t piece_to_id(const std::string& piece) const;  // unk_id() when absent (-1 without one)
  int32_t vocab_size() const;
  int32_t bos_id() const { return bos_; }
  int32_t eos_id() const { return eos_; }
  int32_t pad_id() const { return pad_; }
  int32_t unk_id() const;  // -1: none (byte-level BPE)
  std::string kind() const;  // "sentencepiece" | "bpe"
  void set_special_ids(int32_t bos, int32_t eos, int32_t pad);
  // False for a vocabulary whose model never starts text with BOS (tokenizer_config.json
  // `add_bos_token: false`, as GPT-2-style tokenizers such as SmolLM2's say): encode() then adds
  // none even when asked, as Hugging Face's tokenizer of the same folder does.
  void set_adds_bos(bool adds) { adds_bos_ = adds; }
  bool adds_bos() const { return adds_bos_; }
  const std::string& path() const { return path_; }
  // sha256 of the serialized model: stores record it, so a store made with another tokenizer is refused.
  const std::string& checksum() const { return checksum_; }
  float score(int32_t id) const;
  // A byte token: SentencePiece's byte fallback; for byte-level BPE, one byte of a multi-byte character.
  bool is_byte(int32_t id) const;
  // Not text: SentencePiece's control, unknown and unused pieces; tokenizer.json's added tokens.
  bool is_special(int32_t id) const;
  std::string serialized() const;  // the file's bytes (the model proto of a tokenizer.model)

  class Impl;  // data/tokenizer_impl.h

 private:
  std::unique_ptr<Impl> impl_;
  std::string path_, checksum_;
  int32_t bos_ = 1, eos_ = 2, pad_ = 2;
  bool adds_bos_ = true;
};

}  // namespace kiln::data
