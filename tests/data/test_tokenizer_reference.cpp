// kiln's tokenizers against the libraries users run, id for id: LLaMA-3's tokenizer.json (byte-level
// BPE) against Hugging Face `tokenizers`, and the LLaMA-2 and Mistral tokenizer.model files against
// `sentencepiece`, on Russian prose, English, code, emoji, digits, contractions, added special
// tokens and whitespace-heavy text; decode(encode(x)) == x for each. The reference ids come from
// tests/data/tokenizer_reference.py run by the project's Python (.venv, made by
// scripts/install-deps.sh); without it the test says so and is skipped.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/tokenizer.h"

namespace fs = std::filesystem;
using kiln::data::Tokenizer;

namespace {

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Up to `n` bytes of a file, cut back to a whole UTF-8 character.
std::string head(const std::string& path, size_t n) {
  std::string s = slurp(path).substr(0, n);
  while (!s.empty() && (uint8_t(s.back()) & 0xC0) == 0x80) s.pop_back();
  if (!s.empty() && uint8_t(s.back()) >= 0xC0) s.pop_back();
  return s;
}

std::vector<std::string> texts() {
  const std::string shared = KILN_SHARED_DIR, src = KILN_SOURCE_DIR;
  std::vector<std::string> t = {
      "Привет, мир! Hello world",
      "Все счастливые семьи похожи друг на друга, каждая несчастливая семья несчастлива по-своему.",
      "I'm sure they'RE right; it's what we'd've DONE. Don't you'll",
      "Numbers: 1 12 123 1234 12345678 3.14159 -42 1,000,000 ٣٤٥ ²³",
      "Emoji 😀😃😄 👩‍👩‍👧‍👦 🇫🇷 ❤️ and CJK 中文字符 日本語 한국어",
      "  leading, trailing  \t\n\n\n   tabs\t\tand\r\nCRLF\r\n\r\n    \n  ",
      "unicode spaces:\u00a0nbsp\u2009thin\u3000ideographic\u200bzwsp\u2028line",
      "<|begin_of_text|>Hi<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|> <|reserved_special_token_7|>",
      "not special: <|begin_of_text| <|eot_id <| |> <s> </s>",
      "      ",
      "",
      "a",
      "ÀÉÎÕÜ àéîõü ß ﬁ ǅ Ω ω",
      "\x01\x02\x7f control",
  };
  t.push_back(head(shared + "/data/russian_corpus/anna_karenina.txt", 20000));
  t.push_back(head(shared + "/data/sst2/train.tsv", 8000));
  t.push_back(head(src + "/src/data/bpe_tokenizer.cpp", 12000));
  t.push_back(head(src + "/scripts/install-deps.sh", 3000));
  return t;
}

}  // namespace

TEST(TokenizerReference, IdForIdWithTokenizersAndSentencepiece) {
  const std::string python = std::string(KILN_SOURCE_DIR) + "/.venv/bin/python";
  if (!fs::exists(python)) GTEST_SKIP() << python << " is missing: run scripts/install-deps.sh (it makes .venv)";
  const std::string shared = KILN_SHARED_DIR;
  const std::map<std::string, std::string> files = {
      {"llama3", shared + "/models/llama3-tokenizer/tokenizer.json"},
      {"llama2", shared + "/models/llama2-tokenizer/tokenizer.model"},
      {"mistral", shared + "/models/mistral-tokenizer/tokenizer.model"},
  };
  const auto t = texts();
  const fs::path dir = fs::temp_directory_path() / ("kiln_tok_ref_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  nlohmann::json spec = {{"tokenizers", files}, {"texts", t}};
  std::ofstream(dir / "in.json") << spec.dump();
  const std::string cmd = python + " " + KILN_SOURCE_DIR + "/tests/data/tokenizer_reference.py " +
                          (dir / "in.json").string() + " " + (dir / "out.json").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  nlohmann::json ref = nlohmann::json::parse(slurp((dir / "out.json").string()));
  fs::remove_all(dir);
  std::printf("reference: tokenizers %s, sentencepiece %s\n", ref["versions"]["tokenizers"].get<std::string>().c_str(),
              ref["versions"]["sentencepiece"].get<std::string>().c_str());
  for (auto& [name, path] : files) {
    Tokenizer tok(path);
    size_t tokens = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      const std::vector<int32_t> want = ref[name][i].get<std::vector<int32_t>>();
      const std::vector<int32_t> got = tok.encode(t[i], /*add_bos=*/false);
      tokens += got.size();
      if (got != want) {
        size_t k = 0;
        while (k < got.size() && k < want.size() && got[k] == want[k]) ++k;
        ADD_FAILURE() << name << ", text " << i << ": first difference at token " << k << " of " << want.size()
                      << " (kiln " << (k < got.size() ? got[k] : -1) << " `" << (k < got.size() ? tok.piece(got[k]) : "")
                      << "`, reference " << (k < want.size() ? want[k] : -1) << " `"
                      << (k < want.size() ? tok.piece(want[k]) : "") << "`)";
      }
      EXPECT_EQ(tok.decode(got), name == "llama3" ? t[i] : tok.decode(want)) << name << ", text " << i;
    }
    std::printf("%s (%s): %zu texts, %zu tokens, all equal to the reference\n", name.c_str(), tok.kind().c_str(),
                t.size(), tokens);
  }
}

TEST(TokenizerReference, Llama3FolderIsByteLevelBpe) {
  Tokenizer tok(std::string(KILN_SHARED_DIR) + "/models/llama3-tokenizer");
  EXPECT_EQ(tok.kind(), "bpe");
  EXPECT_EQ(tok.vocab_size(), 128256);
  EXPECT_EQ(tok.bos_id(), 128000);  // tokenizer_config.json
  EXPECT_EQ(tok.eos_id(), 128001);
  EXPECT_EQ(tok.pad_id(), 128001);  // none: eos
  EXPECT_EQ(tok.piece(220), "Ġ");
  EXPECT_EQ(tok.piece_to_id("<|eot_id|>"), 128009);
  EXPECT_EQ(tok.encode("Hello", true, true).front(), 128000);
  EXPECT_EQ(tok.checksum().size(), 64u);
  EXPECT_FALSE(tok.is_byte(tok.piece_to_id("Ġ")));  // a whole character (space)
  EXPECT_TRUE(tok.is_byte(tok.piece_to_id("Ã")));   // byte 0xC3: the start of a 2-byte character
  EXPECT_FALSE(tok.is_byte(tok.piece_to_id("Hello")));
}
