// The tokenizer loaders: tokenizer.json (byte-level BPE) or tokenizer.model (SentencePiece), chosen
// by KILN_FUZZ_TOKENIZER; a tokenizer that loads then encodes and decodes a few texts.
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name = KILN_FUZZ_TOKENIZER;
  std::string path = kiln::fuzz::write_input(name, data, size);
  return kiln::fuzz::expect_clean([&] {
    kiln::data::Tokenizer tok(path);
    static const std::vector<std::string> texts = {
        "Hello world", "Привет, мир!  12345", "  \t\n code(x) { return x->y; }", "\xF0\x9F\x98\x80 emoji", ""};
    for (auto& t : texts) {
      auto ids = tok.encode(t, true, true);
      tok.decode(ids);
      for (int32_t id : ids) tok.piece(id);
    }
    for (int32_t id = 0; id < tok.vocab_size() && id < 64; ++id) {
      tok.is_byte(id);
      tok.is_special(id);
    }
  });
}
