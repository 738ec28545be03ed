// The model's tokenizer: a sentencepiece model (tokenizer.model in the Hugging Face folder).
// libsentencepiece is reached through a privately loaded shim (see spm_shim.cpp for why), so no
// sentencepiece type appears here.
// BOS/EOS/pad ids come from the sentencepiece model, overridable from config.json; LLaMA has no
// pad token, so pad falls back to EOS (padding is always masked, so the id only has to be valid).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::data {

class Tokenizer {
 public:
  // Loads `path` (a tokenizer.model, or a folder holding one). Throws InputError naming the file.
  explicit Tokenizer(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  std::vector<int32_t> encode(const std::string& text, bool add_bos = true, bool add_eos = false) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;
  int32_t piece_to_id(const std::string& piece) const;  // unk_id() when absent
  int32_t vocab_size() const;
  int32_t bos_id() const { return bos_; }
  int32_t eos_id() const { return eos_; }
  int32_t pad_id() const { return pad_; }
  int32_t unk_id() const;
  void set_special_ids(int32_t bos, int32_t eos, int32_t pad);
  const std::string& path() const { return path_; }
  // sha256 of the serialized model: stores record it, so a store made with another tokenizer is refused.
  const std::string& checksum() const { return checksum_; }
  float score(int32_t id) const;
  bool is_byte(int32_t id) const;
  std::string serialized() const;  // the model proto, as written in tokenizer.model

 private:
  void* sp_ = nullptr;
  std::string path_, checksum_;
  int32_t bos_ = 1, eos_ = 2, pad_ = 2;
};

}  // namespace kiln::data
