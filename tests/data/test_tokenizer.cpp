#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "core/error.h"
#include "data/tokenizer.h"

using kiln::data::Tokenizer;

// Encodes the same ids as sentencepiece's own spm_encode (ids checked by hand with
// `spm_encode --output_format=id`), in a process that also runs libtorch: the two bundle
// different protobuf versions, which is why the tokenizer goes through a private shim.
TEST(Tokenizer, Llama2MatchesSpmEncodeBesideTorch) {
  EXPECT_FLOAT_EQ(at::ones({2}).sum().item<float>(), 2.0f);
  Tokenizer tok(std::string(KILN_SHARED_DIR) + "/models/llama2-tokenizer/tokenizer.model");
  EXPECT_EQ(tok.vocab_size(), 32000);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  auto ids = tok.encode("Привет, мир! Hello world", /*add_bos=*/false);
  EXPECT_EQ(ids, (std::vector<int32_t>{7203, 7616, 29892, 4157, 29927, 29991, 15043, 3186}));
  auto with = tok.encode("Hello world", true, true);
  EXPECT_EQ(with, (std::vector<int32_t>{1, 15043, 3186, 2}));
  EXPECT_EQ(tok.decode(ids), "Привет, мир! Hello world");
  EXPECT_EQ(tok.piece(15043), "▁Hello");
  EXPECT_EQ(tok.piece_to_id("▁Hello"), 15043);
  EXPECT_EQ(tok.checksum().size(), 64u);
}

TEST(Tokenizer, LongTextGrowsBuffer) {
  Tokenizer tok(std::string(KILN_SHARED_DIR) + "/models/stories260K/hf");
  EXPECT_EQ(tok.vocab_size(), 512);
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "\xF0\x9F\x98\x80";  // byte-fallback: 4 ids per emoji
  auto ids = tok.encode(text, true);
  EXPECT_GT(ids.size(), text.size());
  EXPECT_EQ(tok.decode(ids), text);
}

TEST(Tokenizer, MissingAndInvalidFiles) {
  try {
    Tokenizer t("/nonexistent/tokenizer.model");
    FAIL();
  } catch (const kiln::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.model: tokenizer file not found"), std::string::npos);
  }
  try {
    Tokenizer t(std::string(KILN_SHARED_DIR) + "/models/stories260K/hf/config.json");
    FAIL();
  } catch (const kiln::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("config.json: not a Hugging Face tokenizer.json"), std::string::npos) << e.what();
  }
  try {
    Tokenizer t(std::string(KILN_SHARED_DIR) + "/models/stories260K/stories260K.bin");
    FAIL();
  } catch (const kiln::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("stories260K.bin: not a sentencepiece model"), std::string::npos) << e.what();
  }
  // A SentencePiece-style tokenizer.json (Metaspace, byte fallback) is named as such, not misread.
  try {
    Tokenizer t(std::string(KILN_SHARED_DIR) + "/models/mistral-tokenizer/tokenizer.json");
    FAIL();
  } catch (const kiln::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json: pre-tokenizer `Metaspace` is not implemented"), std::string::npos)
        << e.what();
  }
}
