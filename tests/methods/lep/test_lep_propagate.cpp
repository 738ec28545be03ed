// LEP propagation: the block-wise least squares against a direct solve; conversion's T and W built by
// hand on a 6-token toy vocabulary; and the whole step on stories260K, with an "instruct" model
// whose embeddings are the base's times a known matrix M, so that overlap and conversion must
// recover W = M and swap must not.
#include <gtest/gtest.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/files.h"
#include "data/tokenizer.h"
#include "methods/lep/lep_init.h"
#include "methods/lep/lep_propagate.h"
#include "model/safetensors.h"

namespace fs = std::filesystem;
using namespace kiln::lep;

namespace {
const std::string kShared = KILN_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K/hf";

at::Tensor tensors_E(const kiln::model::NamedTensorList& tensors) {
  for (auto& [name, t] : tensors)
    if (name == "model.embed_tokens.weight") return t;
  return {};
}

RowBlock rows_of(const at::Tensor& X, const at::Tensor& Y) {
  return [X, Y](int64_t b, int64_t e) { return std::make_pair(X.slice(0, b, e), Y.slice(0, b, e)); };
}
}  // namespace

TEST(LepPropagate, BlockwiseLeastSquaresEqualsTheDirectSolve) {
  at::manual_seed(3);
  const at::Tensor X = at::randn({101, 8}, at::kDouble), Y = at::randn({101, 5}, at::kDouble);
  const at::Tensor direct = std::get<0>(at::linalg_lstsq(X, Y));
  for (int64_t block : {7, 8, 50, 101, 500}) {
    LstsqFit f = lstsq_blockwise(101, 8, rows_of(X, Y), block);
    EXPECT_TRUE(at::allclose(f.W, direct, 1e-10, 1e-12)) << "block " << block;
    const double want = ((X.matmul(direct) - Y).norm() / Y.norm()).item<double>();
    EXPECT_NEAR(f.residual, want, 1e-12) << "block " << block;
    EXPECT_EQ(f.rank, 8);
  }
  // An exact system is solved exactly.
  const at::Tensor M = at::randn({8, 8}, at::kDouble);
  LstsqFit exact = lstsq_blockwise(101, 8, rows_of(X, X.matmul(M)), 16);
  EXPECT_TRUE(at::allclose(exact.W, M, 1e-9, 1e-11));
  EXPECT_LT(exact.residual, 1e-12);
}

TEST(LepPropagate, ConversionOnASixTokenToyVocabulary) {
  // Old vocabulary of 4 tokens (d = 3); the new one has 6: two old tokens as they were, merges of
  // two and of three old tokens, a token with no old pieces (the mean of all rows) and a special.
  Averaging T;
  T.rows = {{0}, {1}, {0, 1}, {2, 3}, {}, {1, 2, 3}};
  const at::Tensor EB = at::tensor({1.0, 0.0, 2.0, 0.5, 1.0, -1.0, 3.0, 1.0, 0.0, -2.0, 0.5, 1.0}, at::kDouble).view({4, 3});
  const at::Tensor EI = at::tensor({0.9, 0.1, 2.2, 0.4, 1.3, -1.0, 2.8, 1.1, 0.3, -2.1, 0.2, 1.2}, at::kDouble).view({4, 3});
  // T by hand: row i has 1/K at its K old pieces; the empty row 1/4 everywhere.
  const double t = 1.0 / 3;
  const std::vector<double> dense = {1, 0, 0, 0,  0, 1, 0, 0,  0.5, 0.5, 0, 0,  0, 0, 0.5, 0.5,
                                     0.25, 0.25, 0.25, 0.25,  0, t, t, t};
  const at::Tensor Tm = at::tensor(dense, at::kDouble).view({6, 4});
  const at::Tensor X = Tm.matmul(EB), Y = Tm.matmul(EI);
  EXPECT_TRUE(at::allclose(average_rows(T, EB, EB.mean(0), 0, 6), X, 1e-15, 1e-15));
  // W by hand: the normal equations (X^T X) W = X^T Y of this full-rank 6 x 3 system.
  const at::Tensor W = at::linalg_solve(X.t().matmul(X), X.t().matmul(Y));
  LstsqFit f = lstsq_blockwise(6, 3, [&](int64_t b, int64_t e) {
    return std::make_pair(average_rows(T, EB, EB.mean(0), b, e), average_rows(T, EI, EI.mean(0), b, e));
  }, 4);
  EXPECT_TRUE(at::allclose(f.W, W, 1e-10, 1e-12)) << f.W << "\n" << W;
  // Not the same as fitting on the old rows (overlap): T weights the merged tokens' rows.
  const at::Tensor W_overlap = std::get<0>(at::linalg_lstsq(EB, EI));
  EXPECT_FALSE(at::allclose(W, W_overlap, 1e-6, 1e-6));
}

TEST(LepPropagate, RecoversAKnownMapOnStories260K) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_lep_prop_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "instruct");
  // The "instruct" model: stories260K with E (tied, so also H) times M, and one layer changed.
  at::manual_seed(11);
  const at::Tensor M = at::eye(64, at::kFloat) + 0.05 * at::randn({64, 64});
  kiln::model::SafeTensorsFile base(kStories + "/model.safetensors");
  kiln::model::NamedTensorList tensors;
  for (auto& [name, e] : base.entries()) {
    at::Tensor t = base.load(name);
    if (name == "model.embed_tokens.weight") t = t.matmul(M);
    if (name == "model.norm.weight") t = t * 1.5;
    tensors.emplace_back(name, t);
  }
  kiln::model::write_safetensors((dir / "instruct/model.safetensors").string(), tensors);
  for (const char* f : {"config.json", "tokenizer.model"}) fs::copy_file(fs::path(kStories) / f, dir / "instruct" / f);
  // The donor: stories260K with LLaMA-2's 32,000-token vocabulary (step 2; untrained here).
  init_model(kStories, kShared + "/models/llama2-tokenizer", (dir / "donor").string());
  kiln::model::SafeTensorsFile donor((dir / "donor/model.safetensors").string());
  const at::Tensor ER = donor.load("model.embed_tokens.weight");

  for (const char* mode : {"swap", "overlap", "conversion"}) {
    const fs::path out = dir / mode;
    PropagateReport r = propagate(kStories, (dir / "instruct").string(), (dir / "donor").string(), mode_from(mode),
                                  out.string(), 100);
    EXPECT_EQ(r.rows, 32000);
    EXPECT_EQ(r.appended, 0);
    kiln::model::SafeTensorsFile got((out / "model.safetensors").string());
    const at::Tensor E = got.load("model.embed_tokens.weight"), H = got.load("lm_head.weight");
    // <unk>, <s>, </s> (the donor's specials) take I's rows, as ruadapt's init_added_toks does.
    EXPECT_EQ(r.from_instruct, 3);
    EXPECT_TRUE(at::equal(E.slice(0, 0, 3), tensors_E(tensors).slice(0, 0, 3))) << mode;
    if (std::string(mode) == "swap") {
      EXPECT_TRUE(at::equal(E.slice(0, 3), ER.slice(0, 3)));
    } else {
      // E_I = E_B M exactly, so the fit finds M (to float32 rounding of the stored rows) and E = E_R M.
      EXPECT_TRUE(at::allclose(r.e.W.to(at::kFloat), M, 1e-3, 1e-4)) << mode;
      EXPECT_LT(r.e.residual, 1e-5) << mode;
      EXPECT_TRUE(at::allclose(E.slice(0, 3), ER.matmul(M).slice(0, 3), 1e-3, 1e-4)) << mode;
    }
    EXPECT_EQ(H.sizes(), E.sizes());
    // Every other tensor is the instruct model's.
    for (auto& [name, t] : tensors)
      if (name != "model.embed_tokens.weight") EXPECT_TRUE(at::equal(got.load(name), t)) << mode << " " << name;
    auto config = nlohmann::json::parse(kiln::read_file((out / "config.json").string()));
    EXPECT_EQ(config["vocab_size"], 32000);
    EXPECT_EQ(kiln::data::Tokenizer(out.string()).vocab_size(), 32000);
  }
  fs::remove_all(dir);
}

// An instruct model whose chat tokens only its tokenizer_config.json names (OpenChat keeps
// <|end_of_turn|> there, beside a 32,000-piece tokenizer.model), propagated onto a SentencePiece
// donor: the tokens follow the donor's ids with I's rows, as control pieces of the written
// tokenizer.model (and special added tokens of its tokenizer.json), and the configuration's ids
// are renumbered to them.
TEST(LepPropagate, ChatTokensOfAnInstructModelOntoASentencePieceDonor) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_lep_chat_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "instruct");
  kiln::model::SafeTensorsFile base(kStories + "/model.safetensors");
  at::manual_seed(5);
  const at::Tensor chat_rows = at::randn({2, 64});
  kiln::model::NamedTensorList tensors;
  for (auto& [name, e] : base.entries()) {
    at::Tensor t = base.load(name);
    if (name == "model.embed_tokens.weight") t = at::cat({t, chat_rows});
    tensors.emplace_back(name, t);
  }
  kiln::model::write_safetensors((dir / "instruct/model.safetensors").string(), tensors);
  fs::copy_file(fs::path(kStories) / "tokenizer.model", dir / "instruct/tokenizer.model");
  auto config = nlohmann::json::parse(kiln::read_file(kStories + "/config.json"));
  config["vocab_size"] = 514;
  kiln::write_file_atomic((dir / "instruct/config.json").string(), config.dump());
  const nlohmann::json tok_config = {
      {"tokenizer_class", "LlamaTokenizer"},
      {"chat_template", "{{ bos_token }}..."},
      {"added_tokens_decoder",
       {{"2", {{"content", "</s>"}, {"special", true}}},
        {"512", {{"content", "<|end_of_turn|>"}, {"special", true}}},
        {"513", {{"content", "<|pad_0|>"}, {"special", true}}}}}};
  kiln::write_file_atomic((dir / "instruct/tokenizer_config.json").string(), tok_config.dump());
  init_model(kStories, kShared + "/models/llama2-tokenizer", (dir / "donor").string());

  const fs::path out = dir / "swap";
  const PropagateReport r =
      propagate(kStories, (dir / "instruct").string(), (dir / "donor").string(), Mode::Swap, out.string(), 4096);
  EXPECT_EQ(r.rows, 32002);
  EXPECT_EQ(r.appended, 2);
  kiln::model::SafeTensorsFile got((out / "model.safetensors").string());
  EXPECT_TRUE(at::equal(got.load("model.embed_tokens.weight").slice(0, 32000), chat_rows));
  EXPECT_TRUE(at::equal(got.load("lm_head.weight").slice(0, 32000), chat_rows));  // tied in I: H is E
  const kiln::data::Tokenizer tok(out.string());
  ASSERT_EQ(tok.vocab_size(), 32002);
  EXPECT_EQ(tok.piece(32000), "<|end_of_turn|>");
  EXPECT_EQ(tok.piece(32001), "<|pad_0|>");
  EXPECT_TRUE(tok.is_special(32000));
  EXPECT_EQ(tok.piece(31999), kiln::data::Tokenizer(kShared + "/models/llama2-tokenizer").piece(31999));
  const auto tj = nlohmann::json::parse(kiln::read_file((out / "tokenizer.json").string()));
  bool found = false;
  for (const auto& a : tj["added_tokens"]) found = found || (a["id"] == 32000 && a["content"] == "<|end_of_turn|>" && a["special"]);
  EXPECT_TRUE(found);
  const auto cfg = nlohmann::json::parse(kiln::read_file((out / "tokenizer_config.json").string()));
  EXPECT_EQ(cfg["added_tokens_decoder"]["32000"]["content"], "<|end_of_turn|>");
  EXPECT_EQ(cfg["added_tokens_decoder"]["32001"]["content"], "<|pad_0|>");
  EXPECT_EQ(cfg["added_tokens_decoder"]["2"]["content"], "</s>");
  EXPECT_EQ(cfg["chat_template"], "{{ bos_token }}...");
  // OpenChat's LlamaTokenizer would rebuild a pipeline of its own: the generic class loads the
  // tokenizer.json above as it is.
  EXPECT_EQ(cfg["tokenizer_class"], "PreTrainedTokenizerFast");
  fs::remove_all(dir);
}

// Issue 32, point 1: RefalMachine/ruadapt ruadapt/ushanka/src/ushanka.py @ 259cecb (init_added_toks)
// copies the instruct model's E and H rows into EVERY added token of the new tokenizer, found by
// encoding the token's text with the instruct tokenizer. With LLaMA-3's vocabulary that covers
// <|eot_id|> and <|start_header_id|> (ids 128009, 128006), which sit inside the base vocabulary:
// kiln used to propagate the donor's (base-derived, never chat-trained) rows for them.
TEST(LepPropagate, Llama3ChatTokensTakeTheInstructModelsRows) {
  const fs::path dir = fs::temp_directory_path() / ("kiln_lep_l3_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  init_model(kStories, kShared + "/models/llama3-tokenizer", (dir / "base").string());
  kiln::model::SafeTensorsFile base((dir / "base/model.safetensors").string());
  const at::Tensor EB = base.load("model.embed_tokens.weight"), HB = base.load("lm_head.weight");
  ASSERT_EQ(EB.size(0), 128256);
  at::manual_seed(7);
  const at::Tensor chat_E = at::randn({2, 64}), chat_H = at::randn({2, 64});
  const at::Tensor chat_ids = at::tensor({int64_t(128006), int64_t(128009)}, at::kLong);
  // I: the base with the two chat rows learned; the donor R: every row moved (E x 2, H x 3).
  auto write = [&](const std::string& name, const at::Tensor& E, const at::Tensor& H) {
    fs::create_directories(dir / name);
    for (auto& f : fs::directory_iterator(dir / "base"))
      if (f.path().filename() != "model.safetensors") fs::copy_file(f.path(), dir / name / f.path().filename());
    kiln::model::NamedTensorList t;
    for (auto& [n, e] : base.entries())
      t.emplace_back(n, n == "model.embed_tokens.weight" ? E : n == "lm_head.weight" ? H : base.load(n));
    kiln::model::write_safetensors((dir / name / "model.safetensors").string(), t);
  };
  const at::Tensor EI = EB.index_copy(0, chat_ids, chat_E), HI = HB.index_copy(0, chat_ids, chat_H);
  write("instruct", EI, HI);
  write("donor", EB * 2, HB * 3);

  const PropagateReport r = propagate((dir / "base").string(), (dir / "instruct").string(), (dir / "donor").string(),
                                      Mode::Swap, (dir / "out").string(), 4096);
  EXPECT_EQ(r.rows, 128256);
  EXPECT_EQ(r.appended, 0);
  EXPECT_EQ(r.from_instruct, 256);  // LLaMA-3's 256 added tokens, all special
  kiln::model::SafeTensorsFile got((dir / "out/model.safetensors").string());
  const at::Tensor E = got.load("model.embed_tokens.weight"), H = got.load("lm_head.weight");
  // The chat tokens: I's learned rows, in E and in H.
  EXPECT_TRUE(at::equal(E.index_select(0, chat_ids), chat_E));
  EXPECT_TRUE(at::equal(H.index_select(0, chat_ids), chat_H));
  // Every other added token: I's row too (here the base's), not the donor's.
  EXPECT_TRUE(at::equal(E[128000], EB[128000]));
  EXPECT_TRUE(at::equal(H[128255], HB[128255]));
  // Ordinary tokens: the donor's (swap: W = identity).
  EXPECT_TRUE(at::equal(E.slice(0, 0, 128000), (EB * 2).slice(0, 0, 128000)));
  EXPECT_TRUE(at::equal(H.slice(0, 0, 128000), (HB * 3).slice(0, 0, 128000)));
  fs::remove_all(dir);
}
