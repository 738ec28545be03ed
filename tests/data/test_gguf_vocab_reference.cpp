// GGUF tokenizers against the libraries users run, id for id (reference ids from
// tests/data/gguf_vocab_reference.py in the project's .venv):
// - SmolLM2-135M-Instruct's GGUF (byte-level BPE, tokenizer.ggml.pre "smollm"): kiln on the
//   tokenizer.json tokenizer_from_gguf makes, against a `tokenizers` BPE built over the file's
//   vocabulary and merges with SmolLM2's own Digits + ByteLevel pre-tokenizer, against
//   transformers loading kiln's folder, and against transformers' own GGUF loader, which knows no
//   "smollm" rule (GPT-2's regex only): its differences are counted, and must all be in texts with
//   a numeric character. Texts: SST-2, WikiQA, a Russian corpus, and texts with numbers.
// - SentencePiece ("llama") GGUFs written by the `gguf` package from LLaMA-2's and stories260K's
//   tokenizer.model: kiln's ids from the folder tokenizer_from_gguf makes equal sentencepiece's on
//   the original model, and so do `tokenizers`' on its tokenizer.json.
// Skipped (ctest reports it) without the GGUF at models/gguf/ or without the .venv.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/files.h"
#include "core/gguf.h"
#include "data/gguf_vocab.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using kiln::data::Tokenizer;

namespace {

const std::string kSource = KILN_SOURCE_DIR, kShared = KILN_SHARED_DIR;
const std::string kPython = kSource + "/.venv/bin/python";
const std::string kScript = kSource + "/tests/data/gguf_vocab_reference.py";

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("kiln_gguf_ref_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::vector<std::string> lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}
std::string field(const std::string& line, size_t k) {  // the k-th tab-separated field
  size_t b = 0;
  for (size_t i = 0; i < k; ++i) {
    b = line.find('\t', b);
    if (b == std::string::npos) return {};
    ++b;
  }
  const size_t e = line.find('\t', b);
  return line.substr(b, e == std::string::npos ? std::string::npos : e - b);
}
bool has_digit(const std::string& s) { return s.find_first_of("0123456789") != std::string::npos; }

struct Corpus {
  std::string name;
  std::vector<std::string> texts;
};

// A few hundred texts of each corpus, and one of texts with numbers (ASCII ones from the corpora,
// and other Unicode numbers, which GPT-2's regex and the Digits rule cut differently).
std::vector<Corpus> corpora() {
  std::vector<Corpus> c(4);
  c[0].name = "sst2";
  auto sst = lines(kShared + "/data/sst2/train.tsv");
  for (size_t i = 1; i < sst.size() && c[0].texts.size() < 300; ++i) c[0].texts.push_back(field(sst[i], 0));
  c[1].name = "wikiqa";
  auto wq = lines(kShared + "/data/wikiqa/train.tsv");
  for (size_t i = 0; i < wq.size() && c[1].texts.size() < 300; ++i) c[1].texts.push_back(field(wq[i], 0) + "\n" + field(wq[i], 1));
  c[2].name = "russian";
  auto ru = lines(kShared + "/data/russian_corpus/corpus_500.txt");
  for (size_t i = 1; i < ru.size() && c[2].texts.size() < 300; ++i) c[2].texts.push_back(ru[i]);
  c[3].name = "numbers";
  c[3].texts = {"x12.5", " ½", "１２３", "Numbers: 1 12 123 1234 12345678 3.14159 -42 1,000,000 ٣٤٥ ²³",
                "In 1999,  2000 and   2001 (three years)", "½ cup, ¾ inch, Ⅻ o'clock, ①②③, ٣ ۴ ५ ๕",
                "Tel: +1 (555) 010-9999\n\n42\t7", "  12  34   56    78"};
  for (size_t i = 0; i < wq.size() && c[3].texts.size() < 300; i += 3)
    if (has_digit(field(wq[i], 1))) c[3].texts.push_back(field(wq[i], 1));
  for (size_t i = 1; i < sst.size() && c[3].texts.size() < 400; ++i)
    if (has_digit(field(sst[i], 0))) c[3].texts.push_back(field(sst[i], 0));
  return c;
}

json run_reference(const fs::path& dir, const std::vector<std::string>& texts, const json& jobs) {
  std::ofstream(dir / "in.json") << json{{"texts", texts}, {"jobs", jobs}}.dump();
  const std::string cmd = kPython + " " + kScript + " ids " + (dir / "in.json").string() + " " + (dir / "out.json").string();
  if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << cmd;
  return json::parse(kiln::read_file((dir / "out.json").string()));
}

void write_files(const kiln::data::HfTokenizerFiles& t, const fs::path& dir) {
  fs::create_directories(dir);
  kiln::write_file_atomic((dir / "tokenizer.json").string(), t.tokenizer_json.dump(2));
  kiln::write_file_atomic((dir / "tokenizer_config.json").string(), t.tokenizer_config.dump(2));
  kiln::write_file_atomic((dir / "special_tokens_map.json").string(), t.special_tokens_map.dump(2));
  if (!t.tokenizer_model.empty()) kiln::write_file_atomic((dir / "tokenizer.model").string(), t.tokenizer_model);
}

std::string first_difference(const Tokenizer& tok, const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
  size_t k = 0;
  while (k < got.size() && k < want.size() && got[k] == want[k]) ++k;
  return "first difference at token " + std::to_string(k) + " of " + std::to_string(want.size()) + " (kiln `" +
         (k < got.size() ? tok.piece(got[k]) : "") + "`, reference `" + (k < want.size() ? tok.piece(want[k]) : "") + "`)";
}

}  // namespace

TEST(GgufVocabReference, SmolLM2) {
  const fs::path gguf_path = kSource + "/models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(gguf_path))
    GTEST_SKIP() << gguf_path.string() << " is absent (the project's fetch script puts SmolLM2-135M-Instruct there)";
  if (!fs::exists(kPython)) GTEST_SKIP() << kPython << " is missing: run scripts/install-deps.sh (it makes .venv)";
  TempDir d;
  const auto files = kiln::data::tokenizer_from_gguf(kiln::gguf::File(gguf_path.string()));
  EXPECT_EQ(files.tokenizer_json["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");
  write_files(files, d.path / "hf");
  Tokenizer tok((d.path / "hf").string());
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);

  std::vector<std::string> texts;
  std::vector<std::pair<std::string, size_t>> bounds;  // corpus name, end index
  for (const auto& c : corpora()) {
    texts.insert(texts.end(), c.texts.begin(), c.texts.end());
    bounds.emplace_back(c.name, texts.size());
  }
  const json jobs = {
      {"hf_gguf", {{"kind", "transformers_gguf"}, {"dir", gguf_path.parent_path().string()}, {"file", gguf_path.filename().string()}}},
      {"hf_dir", {{"kind", "transformers_dir"}, {"dir", (d.path / "hf").string()}}},
      {"digits", {{"kind", "digits_bpe"}, {"gguf", gguf_path.string()}}}};
  const json ref = run_reference(d.path, texts, jobs);
  std::printf("reference: transformers %s, tokenizers %s\n", ref["versions"]["transformers"].get<std::string>().c_str(),
              ref["versions"]["tokenizers"].get<std::string>().c_str());
  size_t begin = 0;
  for (const auto& [name, end] : bounds) {
    size_t tokens = 0, hf_gguf_diff = 0, numeric = 0;
    for (size_t i = begin; i < end; ++i) {
      const std::vector<int32_t> got = tok.encode(texts[i], false);
      tokens += got.size();
      const bool num = ref["numeric"][i].get<bool>();
      numeric += num;
      for (const char* job : {"digits", "hf_dir"}) {
        const auto want = ref[job][i].get<std::vector<int32_t>>();
        if (got != want) ADD_FAILURE() << name << " text " << i << " vs " << job << ": " << first_difference(tok, got, want);
      }
      if (ref["hf_gguf"][i].get<std::vector<int32_t>>() != got) {
        ++hf_gguf_diff;
        // transformers' loader lacks only the digits rule: no other text may differ.
        EXPECT_TRUE(num) << name << " text " << i << " has no numeric character but transformers' GGUF loader cuts it "
                         << "differently: " << texts[i];
      }
    }
    std::printf("%s: %zu texts (%zu with a numeric character), %zu tokens: kiln = Digits+ByteLevel BPE = transformers "
                "on kiln's folder; transformers' GGUF loader differs on %zu\n",
                name.c_str(), end - begin, numeric, tokens, hf_gguf_diff);
    begin = end;
  }

  // The folder adds no BOS (add_bos_token false in the GGUF), in transformers either.
  EXPECT_EQ(ref["hf_dir_special"].get<std::vector<int32_t>>(), tok.encode(texts[0], false));

  // Round trip: tokenizer_to_gguf on kiln's folder, then tokenizer_from_gguf: the same ids.
  kiln::gguf::Writer w;
  kiln::data::tokenizer_to_gguf((d.path / "hf").string(), w);
  w.write((d.path / "rt.gguf").string());
  const kiln::gguf::File rt((d.path / "rt.gguf").string());
  EXPECT_EQ(rt.str("tokenizer.ggml.pre"), "smollm");
  write_files(kiln::data::tokenizer_from_gguf(rt), d.path / "rt");
  Tokenizer back((d.path / "rt").string());
  size_t same = 0;
  for (const auto& t : texts) same += back.encode(t, false) == tok.encode(t, false);
  EXPECT_EQ(same, texts.size());
  std::printf("round trip through tokenizer_to_gguf: %zu of %zu texts give the same ids\n", same, texts.size());
}

TEST(GgufVocabReference, SentencePieceGguf) {
  if (!fs::exists(kPython)) GTEST_SKIP() << kPython << " is missing: run scripts/install-deps.sh (it makes .venv)";
  TempDir d;
  std::vector<std::string> texts;
  for (const auto& c : corpora())
    for (size_t i = 0; i < c.texts.size(); i += 2) texts.push_back(c.texts[i]);
  texts.push_back("  leading, trailing  \t\n\n\n   tabs\t\tand\r\nCRLF  ");
  // Not `<s>` or `</s>` in text: sentencepiece cuts them as text, `tokenizers` (and llama.cpp) match
  // them as the special tokens they are, with any tokenizer.json of a SentencePiece model.
  texts.push_back("Emoji 😀 👩‍👩‍👧 🇫🇷 and CJK 中文字符 日本語 한국어");
  const std::map<std::string, std::string> models = {{"llama2", kShared + "/models/llama2-tokenizer/tokenizer.model"},
                                                     {"stories260K", kSource + "/models/stories260K/tokenizer.model"}};
  for (const auto& [name, model] : models) {
    const fs::path g = d.path / (name + ".gguf"), hf = d.path / name;
    const std::string cmd = kPython + " " + kScript + " spm-gguf " + model + " " + g.string();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    write_files(kiln::data::tokenizer_from_gguf(kiln::gguf::File(g.string())), hf);
    const json ref = run_reference(d.path, texts,
                                   {{"sp", {{"kind", "sentencepiece"}, {"path", model}}},
                                    {"json", {{"kind", "tokenizers_json"}, {"path", (hf / "tokenizer.json").string()}}},
                                    {"hf", {{"kind", "transformers_dir"}, {"dir", hf.string()}}}});
    Tokenizer tok(hf.string());
    EXPECT_EQ(tok.kind(), "sentencepiece");
    size_t tokens = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto want = ref["sp"][i].get<std::vector<int32_t>>();
      const auto got = tok.encode(texts[i], false);
      tokens += got.size();
      if (got != want) ADD_FAILURE() << name << " text " << i << ": " << first_difference(tok, got, want);
      if (ref["json"][i].get<std::vector<int32_t>>() != want)
        ADD_FAILURE() << name << " text " << i << ": tokenizers on the tokenizer.json differs from sentencepiece";
      if (ref["hf"][i].get<std::vector<int32_t>>() != want)
        ADD_FAILURE() << name << " text " << i << ": transformers on the folder differs from sentencepiece";
    }
    // add_bos_token: transformers adds one BOS, as llama.cpp does.
    std::vector<int32_t> with_bos = {1};
    const auto first = ref["sp"][0].get<std::vector<int32_t>>();
    with_bos.insert(with_bos.end(), first.begin(), first.end());
    EXPECT_EQ(ref["hf_special"].get<std::vector<int32_t>>(), with_bos) << name;
    std::printf("%s: %zu texts, %zu tokens: kiln on the GGUF's folder = sentencepiece on the original = tokenizers on "
                "its tokenizer.json = transformers on the folder\n",
                name.c_str(), texts.size(), tokens);
  }
}
