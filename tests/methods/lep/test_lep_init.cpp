// LEP's initialisation against hand-computed means: the stories260K model (512-piece tokenizer, tied
// embeddings) given LLaMA-2's (32,000) and LLaMA-3's (128,256) vocabularies. A row is recomputed
// here from the old tokenizer's pieces of the token's text, one by one; specials copy their twin;
// tokens without one get the mean of all rows. init_model writes a folder kiln loads again, with
// every other weight bit-identical and an untied head.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/files.h"
#include "data/tokenizer.h"
#include "methods/lep/lep_init.h"
#include "model/hf_io.h"
#include "model/safetensors.h"

namespace fs = std::filesystem;
using kiln::data::Tokenizer;

namespace {
const std::string kShared = KILN_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K/hf";

at::Tensor old_embeddings() {
  kiln::model::SafeTensorsFile f(kStories + "/model.safetensors");
  return f.load("model.embed_tokens.weight");
}

// The old pieces of a new token: a SentencePiece piece is its own text (word mark as a space)
// continuing a word; a byte-level BPE token its decoded text.
std::vector<int32_t> old_pieces(const Tokenizer& old_tok, const Tokenizer& new_tok, int32_t id) {
  if (new_tok.kind() != "sentencepiece") return old_tok.encode(new_tok.decode({id}), false);
  std::string piece = new_tok.piece(id), text;
  for (size_t k = 0; k < piece.size();) {
    if (piece.compare(k, 3, "▁") == 0) {
      text += ' ';
      k += 3;
    } else {
      text += piece[k++];
    }
  }
  std::vector<int32_t> with = old_tok.encode("1" + text, false), one = old_tok.encode("1", false);
  return std::vector<int32_t>(with.begin() + int64_t(one.size()), with.end());
}

// The mean of the old rows of `pieces`.
at::Tensor mean_of(const at::Tensor& E, const std::vector<int32_t>& pieces) {
  at::Tensor sum = at::zeros({E.size(1)}, at::kFloat);
  for (int32_t p : pieces) sum += E[p];
  return sum / double(pieces.size());
}

// The decode-then-encode reading kiln used before issue 32.
at::Tensor by_hand_decoded(const at::Tensor& E, const Tokenizer& old_tok, const Tokenizer& new_tok, int32_t id) {
  return mean_of(E, old_tok.encode(new_tok.decode({id}), false));
}

// The row by the definition, with a plain loop over the pieces.
at::Tensor by_hand(const at::Tensor& E, const Tokenizer& old_tok, const Tokenizer& new_tok, int32_t id) {
  std::vector<int32_t> pieces = old_pieces(old_tok, new_tok, id);
  at::Tensor sum = at::zeros({E.size(1)}, at::kFloat);
  for (int32_t p : pieces) sum += E[p];
  return sum / double(pieces.size());
}
}  // namespace

TEST(LepInit, RowsAreTheMeansOfTheOldPiecesRows) {
  const at::Tensor E = old_embeddings();
  Tokenizer old_tok(kStories), new_tok(kShared + "/models/llama2-tokenizer");
  kiln::lep::InitCounts c;
  at::Tensor rows = kiln::lep::init_rows(E, old_tok, new_tok, &c);
  ASSERT_EQ(rows.sizes(), (std::vector<int64_t>{32000, 64}));
  int averaged = 0, copied = 0;
  for (const char* piece : {"▁Hello", "▁the", "ing", "▁Moscow", "▁при", "<0xF0>", "▁▁▁", "▁once"}) {
    const int32_t id = new_tok.piece_to_id(piece);
    ASSERT_NE(id, new_tok.unk_id()) << piece;
    if (const int32_t old_id = old_tok.piece_to_id(piece); old_tok.piece(old_id) == piece) {
      EXPECT_TRUE(at::equal(rows[id], E[old_id])) << piece;  // an old token keeps its row
      ++copied;
      continue;
    }
    const auto pieces = old_pieces(old_tok, new_tok, id);
    if (pieces.empty()) continue;
    EXPECT_TRUE(at::allclose(rows[id], by_hand(E, old_tok, new_tok, id), 1e-6, 1e-7)) << piece;
    ++averaged;
  }
  EXPECT_GE(averaged, 3);
  EXPECT_GE(copied, 3);  // "ing", "<0xF0>", "▁the": stories260K's own pieces
  // Tokens the old tokenizer cuts into several pieces (Cyrillic: its byte pieces) are among them.
  EXPECT_GT(old_tok.encode(new_tok.decode({new_tok.piece_to_id("▁при")}), false).size(), 1u);
  EXPECT_GT(old_tok.encode(new_tok.decode({new_tok.piece_to_id("▁Moscow")}), false).size(), 1u);
  // Specials copy their twin: <unk>, <s>, </s> are ids 0-2 in both.
  for (int32_t id : {0, 1, 2}) EXPECT_TRUE(at::equal(rows[id], E[id])) << id;
  EXPECT_EQ(c.specials_copied, 3);
  EXPECT_EQ(c.averaged + c.copied + c.specials_copied + c.no_pieces, 32000);
}

// Every old id of an Extended vocabulary keeps its row; with the model's own vocabulary nothing
// changes. Re-encoding a lone piece's decoded text does not give the piece back ("ing" comes back
// as "▁ing", a byte piece as its raw byte): 419 of the 512 rows changed before.
TEST(LepInit, OldTokensKeepTheirRows) {
  const at::Tensor E = old_embeddings();
  Tokenizer tok(kStories);
  kiln::lep::InitCounts c;
  EXPECT_TRUE(at::equal(kiln::lep::init_rows(E, tok, tok, &c), E));
  EXPECT_EQ(c.copied + c.specials_copied, 512);
  EXPECT_NE(tok.encode(tok.decode({tok.piece_to_id("ing")}), false), std::vector<int32_t>{tok.piece_to_id("ing")});
}

// Issue 32, point 10: RefalMachine/ruadapt ruadapt/tokenization/utils.py @ 259cecb
// (reinit_embeddings_with_head_mistral, special_encode) encodes "1" + the raw piece with the old
// tokenizer and drops the pieces of "1": a word-internal piece is read without a word mark.
// Mistral's word-internal "ста" (the issue's "ени" is not in Mistral's vocabulary): stories260K has
// no Cyrillic, so its pieces of "ста" are the UTF-8 bytes D1 81 D1 82 D0 B0, byte pieces at id
// 3 + byte; re-encoding the decoded piece ("ста" -> "▁ста") put a "▁" in front.
TEST(LepInit, WordInternalSentencePiecePiecesHaveNoWordMark) {
  const at::Tensor E = old_embeddings();
  Tokenizer old_tok(kStories), new_tok(kShared + "/models/mistral-tokenizer");
  const int32_t sta = new_tok.piece_to_id("ста");
  ASSERT_EQ(new_tok.piece(sta), "ста");
  EXPECT_EQ(kiln::lep::old_pieces_of(old_tok, new_tok, sta), (std::vector<int32_t>{212, 132, 212, 133, 211, 179}));
  at::Tensor rows = kiln::lep::init_rows(E, old_tok, new_tok);
  const at::Tensor want = (E[212] * 2 + E[132] + E[133] + E[211] + E[179]) / 6;
  EXPECT_TRUE(at::allclose(rows[sta], want, 1e-6, 1e-7));
  // The decode-then-encode reading differs: it starts with the word mark.
  const auto old_reading = old_tok.encode(new_tok.decode({sta}), false);
  ASSERT_FALSE(old_reading.empty());
  EXPECT_EQ(old_tok.piece(old_reading[0]).rfind("▁", 0), 0u);
  EXPECT_FALSE(at::allclose(rows[sta], by_hand_decoded(E, old_tok, new_tok, sta), 1e-6, 1e-7));
  // A word-initial piece keeps its mark: "▁при" starts with a piece that does.
  const int32_t pri = new_tok.piece_to_id("▁при");
  ASSERT_EQ(new_tok.piece(pri), "▁при");
  const auto pri_pieces = kiln::lep::old_pieces_of(old_tok, new_tok, pri);
  ASSERT_FALSE(pri_pieces.empty());
  EXPECT_EQ(old_tok.piece(pri_pieces[0]).rfind("▁", 0), 0u);
}

TEST(LepInit, SpecialsWithoutATwinGetTheMeanOfAllRows) {
  const at::Tensor E = old_embeddings();
  Tokenizer old_tok(kStories), new_tok(kShared + "/models/llama3-tokenizer");
  kiln::lep::InitCounts c;
  at::Tensor rows = kiln::lep::init_rows(E, old_tok, new_tok, &c);
  EXPECT_TRUE(at::allclose(rows[new_tok.piece_to_id("<|eot_id|>")], E.mean(0)));
  EXPECT_EQ(c.no_pieces, 256);  // LLaMA-3's 256 added tokens; stories260K has none of them
  const int32_t hello = new_tok.encode("Hello", false).at(0);
  EXPECT_TRUE(at::allclose(rows[hello], by_hand(E, old_tok, new_tok, hello), 1e-6, 1e-7));
}

TEST(LepInit, ModelFolderLoadsWithAnUntiedHeadAndUnchangedLayers) {
  const fs::path out = fs::temp_directory_path() / ("kiln_lep_init_" + std::to_string(::getpid()));
  fs::remove_all(out);
  kiln::lep::init_model(kStories, kShared + "/models/llama2-tokenizer", out.string());
  auto config = nlohmann::json::parse(kiln::read_file((out / "config.json").string()));
  EXPECT_EQ(config["vocab_size"], 32000);
  EXPECT_EQ(config["tie_word_embeddings"], false);
  EXPECT_TRUE(fs::exists(out / "tokenizer.model"));
  kiln::model::SafeTensorsFile before(kStories + "/model.safetensors"), after((out / "model.safetensors").string());
  for (auto& [name, e] : before.entries())
    if (name != "model.embed_tokens.weight") EXPECT_TRUE(at::equal(before.load(name), after.load(name))) << name;
  const at::Tensor E2 = after.load("model.embed_tokens.weight"), H2 = after.load("lm_head.weight");
  EXPECT_EQ(E2.sizes(), (std::vector<int64_t>{32000, 64}));
  EXPECT_TRUE(at::equal(E2, H2));  // both averaged from the one tied matrix; they train apart from here
  auto model = kiln::model::load_pretrained(out.string(), at::kFloat, at::kCPU);
  EXPECT_EQ(model->config().vocab_size, 32000);
  EXPECT_FALSE(model->config().tie_word_embeddings);
  fs::remove_all(out);
}

// A SentencePiece vocabulary's tokenizer_config.json comes along naming PreTrainedTokenizerFast:
// transformers then loads the tokenizer.json written beside tokenizer.model as it is, where its
// LlamaTokenizer would rebuild a pipeline of its own.
TEST(LepInit, SentencePieceConfigLoadsTheWrittenTokenizerJson) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_lep_init_cfg_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "tok");
  fs::copy_file(kShared + "/models/llama2-tokenizer/tokenizer.model", dir / "tok/tokenizer.model");
  kiln::write_file_atomic((dir / "tok/tokenizer_config.json").string(),
                          R"({"tokenizer_class": "LlamaTokenizer", "model_max_length": 4096})");
  kiln::lep::init_model(kStories, (dir / "tok").string(), (dir / "out").string());
  EXPECT_TRUE(fs::exists(dir / "out/tokenizer.json"));
  const auto cfg = nlohmann::json::parse(kiln::read_file((dir / "out/tokenizer_config.json").string()));
  EXPECT_EQ(cfg["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(cfg["model_max_length"], 4096);
  fs::remove_all(dir);
}
