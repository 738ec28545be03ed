// GGUF tokenizers (data/gguf_vocab.h) and the Digits pre-tokenizer they need: Digits on a small
// hand-made byte-level vocabulary; tokenizer_from_gguf on small GGUF files written here (byte-level
// with control and user-defined tokens; SentencePiece-style loaded through sentencepiece); the
// errors, one line each; and tokenizer_to_gguf -> tokenizer_from_gguf round trips on the real
// tokenizers in ../shared and models/ (same ids as the original on the same texts).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "core/error.h"
#include "core/files.h"
#include "core/gguf.h"
#include "data/gguf_vocab.h"
#include "data/tokenizer.h"
#include "data/tokenizer_impl.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using kiln::data::Tokenizer;
namespace gguf = kiln::gguf;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() / ("kiln_gguf_vocab_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string bl(const std::string& text) {  // a text in GPT-2's byte alphabet
  std::string out;
  for (char c : text) out += kiln::data::byte_level_char(uint8_t(c));
  return out;
}

// A byte-level vocabulary: the 256 bytes, then for each word (a list of units already in the
// vocabulary, given as text) the merges that build it left to right.
struct ByteVocab {
  std::vector<std::string> tokens;  // byte-level spelling
  std::vector<std::string> merges;  // "left right"
  ByteVocab() {
    for (int b = 0; b < 256; ++b) tokens.push_back(kiln::data::byte_level_char(uint8_t(b)));
  }
  void word(const std::vector<std::string>& units) {
    std::string prefix = bl(units[0]);
    for (size_t k = 1; k < units.size(); ++k) {
      merges.push_back(prefix + " " + bl(units[k]));
      prefix += bl(units[k]);
      if (std::find(tokens.begin(), tokens.end(), prefix) == tokens.end()) tokens.push_back(prefix);
    }
  }
  static std::vector<std::string> bytes(const std::string& s) {
    std::vector<std::string> u;
    for (char c : s) u.push_back(std::string(1, c));
    return u;
  }
};

// Digits test vocabulary: every numeric character of the tests is one token, and so are the runs
// "12", "123", "１２３" and " ½" (which only a pre-tokenizer that keeps them together can make).
ByteVocab digits_vocab() {
  ByteVocab v;
  for (const char* c : {"½", "１", "２", "３"}) v.word(ByteVocab::bytes(c));
  v.word({"1", "2"});
  v.word({"12", "3"});
  v.word({"１", "２"});
  v.word({"１２", "３"});
  v.word({" ", "½"});
  return v;
}

std::string write_bpe_json(const fs::path& dir, const ByteVocab& v, const json& pre) {
  json vocab = json::object();
  for (size_t i = 0; i < v.tokens.size(); ++i) vocab[v.tokens[i]] = i;
  json j = {{"version", "1.0"},
            {"added_tokens", json::array()},
            {"normalizer", nullptr},
            {"pre_tokenizer", pre},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", v.merges}}}};
  const std::string p = (dir / "tokenizer.json").string();
  kiln::write_file_atomic(p, j.dump());
  return p;
}

// The text of each token kiln cuts `text` into.
std::vector<std::string> pieces(const Tokenizer& tok, const std::string& text) {
  std::vector<std::string> out;
  for (int32_t id : tok.encode(text, false)) out.push_back(tok.decode({id}));
  return out;
}

using P = std::vector<std::string>;

}  // namespace

TEST(Digits, IndividualRunsAndNone) {
  TempDir d;
  const ByteVocab v = digits_vocab();
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  auto with_digits = [&](bool individual) {
    return json{{"type", "Sequence"},
                {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", individual}}, byte_level}}};
  };
  Tokenizer individual(write_bpe_json(d.path, v, with_digits(true)));
  EXPECT_EQ(pieces(individual, "123"), (P{"1", "2", "3"}));
  EXPECT_EQ(pieces(individual, " ½"), (P{" ", "½"}));  // ½ is \p{N} (No): alone, the space apart
  EXPECT_EQ(pieces(individual, "１２３"), (P{"１", "２", "３"}));  // fullwidth digits (Nd)
  EXPECT_EQ(pieces(individual, "x12.5"), (P{"x", "1", "2", ".", "5"}));
  Tokenizer runs(write_bpe_json(d.path, v, with_digits(false)));
  EXPECT_EQ(pieces(runs, "123"), (P{"123"}));
  EXPECT_EQ(pieces(runs, "１２３"), (P{"１２３"}));
  EXPECT_EQ(pieces(runs, " ½"), (P{" ", "½"}));
  EXPECT_EQ(pieces(runs, "x12.5"), (P{"x", "12", ".", "5"}));
  Tokenizer none(write_bpe_json(d.path, v, byte_level));  // GPT-2's regex keeps " ½" and "123" together
  EXPECT_EQ(pieces(none, " ½"), (P{" ½"}));
  EXPECT_EQ(pieces(none, "123"), (P{"123"}));
  // A ByteLevel prefix space after another pre-tokenizer would be added to every piece: refused.
  json bad = with_digits(true);
  bad["pretokenizers"][1]["add_prefix_space"] = true;
  EXPECT_THROW(Tokenizer(write_bpe_json(d.path, v, bad)), kiln::InputError);
}

namespace {

// A small byte-level GGUF vocabulary: 3 control tokens first (as SmolLM2 has), the bytes, the
// digits vocabulary's merged tokens, one user-defined token.
void small_gpt2(gguf::Writer& w, const std::string& pre) {
  ByteVocab v = digits_vocab();
  std::vector<std::string> tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  tokens.insert(tokens.end(), v.tokens.begin(), v.tokens.end());
  tokens.push_back("<think>");
  std::vector<int64_t> types(tokens.size(), 1);
  types[0] = types[1] = types[2] = 3;
  types.back() = 4;
  w.set("general.architecture", gguf::Value::str("llama"));
  w.set("tokenizer.ggml.model", gguf::Value::str("gpt2"));
  if (!pre.empty()) w.set("tokenizer.ggml.pre", gguf::Value::str(pre));
  w.set("tokenizer.ggml.tokens", gguf::Value::string_array(tokens));
  w.set("tokenizer.ggml.token_type", gguf::Value::i32_array(types));
  w.set("tokenizer.ggml.merges", gguf::Value::string_array(v.merges));
  w.set("tokenizer.ggml.bos_token_id", gguf::Value::u32(1));
  w.set("tokenizer.ggml.eos_token_id", gguf::Value::u32(2));
  w.set("tokenizer.ggml.padding_token_id", gguf::Value::u32(2));
  w.set("tokenizer.ggml.add_bos_token", gguf::Value::boolean(false));
  w.set("tokenizer.chat_template", gguf::Value::str("{{ messages }}"));
}

void write_files(const kiln::data::HfTokenizerFiles& t, const fs::path& dir) {
  fs::create_directories(dir);
  kiln::write_file_atomic((dir / "tokenizer.json").string(), t.tokenizer_json.dump(2));
  kiln::write_file_atomic((dir / "tokenizer_config.json").string(), t.tokenizer_config.dump(2));
  kiln::write_file_atomic((dir / "special_tokens_map.json").string(), t.special_tokens_map.dump(2));
  if (!t.tokenizer_model.empty()) kiln::write_file_atomic((dir / "tokenizer.model").string(), t.tokenizer_model);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kiln::InputError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(GgufVocab, ByteLevelFromGguf) {
  TempDir d;
  gguf::Writer w;
  small_gpt2(w, "smollm");
  const std::string file = (d.path / "t.gguf").string();
  w.write(file);
  gguf::File f(file);
  const auto t = kiln::data::tokenizer_from_gguf(f, 2048);
  EXPECT_TRUE(t.tokenizer_model.empty());
  EXPECT_EQ(t.bos_id, 1);
  EXPECT_EQ(t.eos_id, 2);
  EXPECT_EQ(t.pad_id, 2);
  EXPECT_EQ(t.unk_id, -1);
  EXPECT_EQ(t.tokenizer_json["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");
  EXPECT_EQ(t.tokenizer_json["pre_tokenizer"]["pretokenizers"][1]["use_regex"], true);
  EXPECT_EQ(t.tokenizer_json["added_tokens"].size(), 4u);
  EXPECT_EQ(t.tokenizer_json["added_tokens"][3]["content"], "<think>");
  EXPECT_EQ(t.tokenizer_json["added_tokens"][3]["special"], false);
  EXPECT_EQ(t.tokenizer_json["added_tokens"][1]["special"], true);
  EXPECT_EQ(t.tokenizer_config["bos_token"], "<|im_start|>");
  EXPECT_EQ(t.tokenizer_config["pad_token"], "<|im_end|>");
  EXPECT_EQ(t.tokenizer_config["chat_template"], "{{ messages }}");
  EXPECT_EQ(t.tokenizer_config["model_max_length"], 2048);
  EXPECT_EQ(t.tokenizer_config["add_bos_token"], false);
  write_files(t, d.path / "hf");
  Tokenizer tok((d.path / "hf").string());
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(pieces(tok, "<|im_start|>x123 ½<think>"), (P{"<|im_start|>", "x", "1", "2", "3", " ", "½", "<think>"}));

  // "gpt-2": GPT-2's regex alone keeps the runs; "llama-bpe" ignores merges and adds BOS by default.
  gguf::Writer w2;
  small_gpt2(w2, "gpt-2");
  w2.write(file);
  write_files(kiln::data::tokenizer_from_gguf(gguf::File(file)), d.path / "gpt2");
  EXPECT_EQ(pieces(Tokenizer((d.path / "gpt2").string()), "x123 ½"), (P{"x", "123", " ½"}));
  gguf::Writer w3;
  small_gpt2(w3, "llama-bpe");
  w3.set("tokenizer.ggml.add_bos_token", gguf::Value::boolean(true));
  w3.write(file);
  const auto l3 = kiln::data::tokenizer_from_gguf(gguf::File(file));
  EXPECT_EQ(l3.tokenizer_json["model"]["ignore_merges"], true);
  EXPECT_EQ(l3.tokenizer_json["post_processor"]["type"], "TemplateProcessing");
  write_files(l3, d.path / "l3");
  EXPECT_EQ(pieces(Tokenizer((d.path / "l3").string()), "x1234 ½"), (P{"x", "123", "4", " ", "½"}));
}

TEST(GgufVocab, SentencePieceFromGguf) {
  TempDir d;
  // <unk> <s> </s>, the 256 byte pieces, then pieces scored so that "▁ab" is made from "▁a" + "b".
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<int64_t> types = {2, 3, 3};
  std::vector<double> scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    tokens.push_back(buf);
    types.push_back(6);
    scores.push_back(0);
  }
  const std::vector<std::pair<std::string, double>> normal = {
      {"\xE2\x96\x81", -1}, {"a", -2}, {"b", -3}, {"\xE2\x96\x81" "a", -4}, {"\xE2\x96\x81" "ab", -5}};
  for (const auto& [t, s] : normal) {
    tokens.push_back(t);
    types.push_back(1);
    scores.push_back(s);
  }
  gguf::Writer w;
  w.set("tokenizer.ggml.model", gguf::Value::str("llama"));
  w.set("tokenizer.ggml.tokens", gguf::Value::string_array(tokens));
  w.set("tokenizer.ggml.scores", gguf::Value::f32_array(scores));
  w.set("tokenizer.ggml.token_type", gguf::Value::i32_array(types));
  const std::string file = (d.path / "spm.gguf").string();
  w.write(file);
  const auto t = kiln::data::tokenizer_from_gguf(gguf::File(file));
  ASSERT_FALSE(t.tokenizer_model.empty());
  EXPECT_EQ(t.bos_id, 1);  // llama.cpp's defaults without the keys
  EXPECT_EQ(t.eos_id, 2);
  EXPECT_EQ(t.unk_id, 0);
  EXPECT_EQ(t.tokenizer_config["add_bos_token"], true);
  write_files(t, d.path / "hf");
  Tokenizer tok((d.path / "hf").string());
  EXPECT_EQ(tok.kind(), "sentencepiece");
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.unk_id(), 0);
  // "ab a\n": ▁ab ▁a, then the newline as its byte piece <0x0A> (3 + 10).
  EXPECT_EQ(tok.encode("ab a\n", false), (std::vector<int32_t>{263, 262, 13}));
}

TEST(GgufVocab, ErrorsNameFileKeyAndValue) {
  TempDir d;
  const std::string file = (d.path / "x.gguf").string();
  auto from = [&](const std::function<void(gguf::Writer&)>& edit) {
    gguf::Writer w;
    small_gpt2(w, "smollm");
    edit(w);
    w.write(file);
    return error_of([&] { kiln::data::tokenizer_from_gguf(gguf::File(file)); });
  };
  std::string e = from([](gguf::Writer& w) { w.set("tokenizer.ggml.model", gguf::Value::str("t5")); });
  EXPECT_NE(e.find(file + ": tokenizer.ggml.model = \"t5\" is not supported (kiln knows: gpt2, llama)"), std::string::npos) << e;
  e = from([](gguf::Writer& w) { w.set("tokenizer.ggml.pre", gguf::Value::str("foo")); });
  EXPECT_NE(e.find(file + ": tokenizer.ggml.pre = \"foo\" is not supported (kiln knows: smollm,"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  e = from([](gguf::Writer& w) { w.set("tokenizer.ggml.merges", gguf::Value::string_array({"x y"})); });
  EXPECT_NE(e.find("tokenizer.ggml.merges[0] = \"x y\" uses a token missing"), std::string::npos) << e;
  e = from([](gguf::Writer& w) { w.set("tokenizer.ggml.token_type", gguf::Value::i32_array({1, 1})); });
  EXPECT_NE(e.find("tokenizer.ggml.token_type has 2 entries for"), std::string::npos) << e;
  e = from([](gguf::Writer& w) { w.set("tokenizer.ggml.bos_token_id", gguf::Value::u32(100000)); });
  EXPECT_NE(e.find("tokenizer.ggml.bos_token_id = 100000 is not an id"), std::string::npos) << e;

  // Export: a pre-tokenizer with no GGUF name, a normalizer, a unigram SentencePiece model.
  const fs::path m = d.path / "model";
  fs::create_directories(m);
  const json split = {{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}, {"invert", false}};
  write_bpe_json(m, digits_vocab(), {{"type", "Sequence"}, {"pretokenizers", {split, {{"type", "ByteLevel"}, {"use_regex", false}}}}});
  gguf::Writer w;
  e = error_of([&] { kiln::data::tokenizer_to_gguf(m.string(), w); });
  EXPECT_NE(e.find((m / "tokenizer.json").string() + ": the pre-tokenizer (split:\\w+, bytelevel:0) matches no GGUF"), std::string::npos) << e;
  json j = json::parse(kiln::read_file((m / "tokenizer.json").string()));
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"use_regex", true}};
  j["normalizer"] = {{"type", "NFC"}};
  kiln::write_file_atomic((m / "tokenizer.json").string(), j.dump());
  e = error_of([&] { kiln::data::tokenizer_to_gguf(m.string(), w); });
  EXPECT_NE(e.find("normalizer `NFC` has no GGUF form"), std::string::npos) << e;
  e = error_of([&] { kiln::data::tokenizer_to_gguf((d.path / "none").string(), w); });
  EXPECT_NE(e.find("no tokenizer.model or tokenizer.json"), std::string::npos) << e;
}

namespace {

std::vector<std::string> round_trip_texts() {
  std::vector<std::string> t = {
      "Hello world! The year 2024 had 365 days; ½ + ¼ = ¾, １２３ and ٣٤٥.",
      "I'm sure they'RE right; it's what we'd've DONE.  Double  spaces,\ttabs\n\nnewlines\r\n",
      "Привет, мир! Все счастливые семьи похожи друг на друга.",
      "Emoji 😀 👩‍👩‍👧 and CJK 中文字符 日本語",
      "x12.5 3.14159 -42 1,000,000 0xFF",
      "<|im_start|>user\nHi<|im_end|> <|begin_of_text|><|eot_id|> <s> </s>",
      "   leading and trailing   ",
      "a",
  };
  const std::string shared = KILN_SHARED_DIR;
  std::ifstream sst(shared + "/data/sst2/dev.tsv");
  std::string line;
  std::getline(sst, line);  // header
  for (int i = 0; i < 200 && std::getline(sst, line); ++i) t.push_back(line.substr(0, line.find('\t')));
  std::string ru = kiln::read_file(shared + "/data/russian_corpus/anna_karenina.txt").substr(0, 20000);
  while (!ru.empty() && (uint8_t(ru.back()) & 0xC0) == 0x80) ru.pop_back();
  if (!ru.empty() && uint8_t(ru.back()) >= 0xC0) ru.pop_back();
  t.push_back(ru);
  return t;
}

// tokenizer_to_gguf, a GGUF file, tokenizer_from_gguf, a folder: kiln's ids there equal the original's.
void round_trip(const std::string& name, const std::string& dir, const std::string& want_model, const std::string& want_pre) {
  TempDir d;
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::str("llama"));
  kiln::data::tokenizer_to_gguf(dir, w);
  const std::string file = (d.path / (name + ".gguf")).string();
  w.write(file);
  gguf::File f(file);
  EXPECT_EQ(f.str("tokenizer.ggml.model"), want_model) << name;
  EXPECT_EQ(f.str_or("tokenizer.ggml.pre", ""), want_pre) << name;
  write_files(kiln::data::tokenizer_from_gguf(f), d.path / "hf");
  Tokenizer a(dir), b((d.path / "hf").string());
  EXPECT_EQ(a.kind(), b.kind()) << name;
  EXPECT_EQ(a.vocab_size(), b.vocab_size()) << name;
  EXPECT_EQ(a.bos_id(), b.bos_id()) << name;
  EXPECT_EQ(a.eos_id(), b.eos_id()) << name;
  size_t tokens = 0;
  const auto texts = round_trip_texts();
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto want = a.encode(texts[i], false), got = b.encode(texts[i], false);
    tokens += want.size();
    EXPECT_EQ(got, want) << name << ", text " << i << ": " << texts[i].substr(0, 80);
  }
  std::printf("%s: %zu texts, %zu tokens, round trip through GGUF (%s, pre `%s`) gives the same ids\n", name.c_str(),
              texts.size(), tokens, want_model.c_str(), want_pre.c_str());
}

}  // namespace

TEST(GgufVocabRoundTrip, Llama3ByteLevel) {
  round_trip("llama3", std::string(KILN_SHARED_DIR) + "/models/llama3-tokenizer", "gpt2", "llama-bpe");
}
TEST(GgufVocabRoundTrip, Stories260KSentencePiece) {
  round_trip("stories260K", std::string(KILN_SOURCE_DIR) + "/models/stories260K", "llama", "");
}
TEST(GgufVocabRoundTrip, Llama2SentencePiece) {
  round_trip("llama2", std::string(KILN_SHARED_DIR) + "/models/llama2-tokenizer", "llama", "");
}
TEST(GgufVocabRoundTrip, MistralSentencePiece) {
  round_trip("mistral", std::string(KILN_SHARED_DIR) + "/models/mistral-tokenizer", "llama", "");
}
