// Word labels on sub-tokens for LS-unLLaMA's NER, through the data pipeline's own functions
// (data/align.h, LS-LLaMA's token encoder, collate): on hand-built word ids, and on real CoNLL-2003 dev
// sentences tokenized with the bundled stories260K and the LLaMA-2 tokenizers. The task trains on
// exactly these labels and maps its token predictions back to words with word_predictions.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "core/config.h"
#include "data/align.h"
#include "data/collate.h"
#include "data/preprocess.h"
#include "data/readers.h"
#include "data/store.h"
#include "data/tokenizer.h"
#include "methods/ls_llama/data.h"

using namespace kiln::data;
namespace fs = std::filesystem;

namespace {
const std::string kShared = KILN_SHARED_DIR;

std::vector<Record> conll_dev(size_t n) {
  kiln::DataConfig c;
  c.format = "conll";
  auto recs = read_conll(kShared + "/data/conll2003/eng.testa", options_from(c));
  if (recs.size() > n) recs.resize(n);
  return recs;
}
// LS-LLaMA's token classification encoder (data.format conll).
std::unique_ptr<Encoder> token_encoder() {
  kiln::DataConfig c;
  c.format = "conll";
  return kiln::methods::ls_llama::make_encoder(c);
}

const std::vector<int32_t>& ints(const StoreData& d, const std::string& name) {
  return std::get<std::vector<int32_t>>(d.column(name).values);
}

}  // namespace

TEST(Align, FirstSubTokenCarriesTheWordLabel) {
  // BOS, word 0 in two pieces, word 1 in one, word 2 in three, EOS
  std::vector<int32_t> wid = {kNoWord, 0, 0, 1, 2, 2, 2, kNoWord};
  auto lab = align_word_labels(wid, {3, 4, 5});
  EXPECT_EQ(lab, (std::vector<int32_t>{kIgnore, 3, kIgnore, 4, 5, kIgnore, kIgnore, kIgnore}));
  // Back to words: the prediction at each word's first sub-token; a word with no token left is `missing`.
  std::vector<int32_t> preds = {9, 1, 7, 2, 3, 8, 8, 9};
  EXPECT_EQ(word_predictions(wid, preds, 3, 0), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(word_predictions({kNoWord, 0, 0, 1}, {0, 5, 6, 7}, 3, -1), (std::vector<int32_t>{5, 7, -1}));
}

TEST(Align, RealConllSentencesBothTokenizers) {
  auto recs = conll_dev(400);
  ASSERT_EQ(recs.size(), 400u);
  auto labels = build_label_map(true, {}, recs, {});
  EXPECT_EQ(labels.front(), "O");
  for (std::string model : {kShared + "/models/stories260K/hf", kShared + "/models/llama2-tokenizer"}) {
    Tokenizer tok(model);
    kiln::DataConfig c;
    c.format = "conll";
    c.max_len = 100000;  // no truncation here
    StoreData d = encode_records(*token_encoder(), recs, 0, recs.size(), labels, tok, c);
    ASSERT_EQ(d.size(), int64_t(recs.size()));
    int64_t multi_piece_words = 0;
    for (int64_t i = 0; i < d.size(); ++i) {
      const Record& r = recs[size_t(i)];
      size_t b = size_t(d.offsets[size_t(i)]), e = size_t(d.offsets[size_t(i) + 1]);
      std::vector<int32_t> ids(d.input_ids.begin() + b, d.input_ids.begin() + e);
      std::vector<int32_t> wid(ints(d, "word_ids").begin() + b, ints(d, "word_ids").begin() + e);
      std::vector<int32_t> tl(ints(d, "token_labels").begin() + b, ints(d, "token_labels").begin() + e);
      // The model sees the tokens of the space-joined sentence, not some other segmentation.
      std::string joined;
      for (size_t w = 0; w < r.words.size(); ++w) joined += (w ? " " : "") + r.words[w];
      ASSERT_EQ(ids, tok.encode(joined, true)) << r.where();
      EXPECT_EQ(wid[0], kNoWord);  // BOS
      // Exactly one labelled token per word, at its first sub-token, carrying the word's tag.
      int64_t labelled = 0;
      for (size_t t = 0; t < ids.size(); ++t) {
        bool first = wid[t] != kNoWord && (t == 0 || wid[t - 1] != wid[t]);
        EXPECT_EQ(tl[t] != kIgnore, first) << r.where() << " token " << t;
        if (first) {
          ++labelled;
          EXPECT_EQ(labels[size_t(tl[t])], r.tags[size_t(wid[t])]) << r.where();
        } else if (wid[t] != kNoWord) {
          ++multi_piece_words;
        }
      }
      EXPECT_EQ(labelled, int64_t(r.words.size())) << r.where();
      // Each word's pieces decode to the word.
      for (size_t w = 0; w < r.words.size(); ++w) {
        std::vector<int32_t> piece_ids;
        for (size_t t = 0; t < ids.size(); ++t)
          if (wid[t] == int32_t(w)) piece_ids.push_back(ids[t]);
        EXPECT_EQ(tok.decode(piece_ids), r.words[w]) << r.where() << " word " << w;
      }
      // Gold token labels taken as predictions map back to the gold word tags.
      const auto& word_offsets = d.column("word_tags").offsets;
      std::vector<int32_t> gold(ints(d, "word_tags").begin() + word_offsets[size_t(i)],
                                ints(d, "word_tags").begin() + word_offsets[size_t(i) + 1]);
      EXPECT_EQ(word_predictions(wid, tl, int64_t(gold.size()), -1), gold) << r.where();
    }
    EXPECT_GT(multi_piece_words, 100) << "the test must cover words split into several pieces";
  }
}

TEST(Align, TruncatedWordsAndPaddingSides) {
  auto recs = conll_dev(64);
  auto labels = build_label_map(true, {}, recs, {});
  Tokenizer tok(kShared + "/models/stories260K/hf");
  kiln::DataConfig c;
  c.format = "conll";
  c.max_len = 100000;
  StoreData d = encode_records(*token_encoder(), recs, 0, recs.size(), labels, tok, c);
  d.meta.kind = "token_classification";
  d.meta.label_names = labels;
  d.meta.bos_id = tok.bos_id(), d.meta.eos_id = tok.eos_id(), d.meta.pad_id = tok.pad_id();
  d.meta.tokenizer_checksum = tok.checksum();
  fs::path dir = fs::temp_directory_path() / ("kiln_test_align_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  write_store((dir / "eval.h5").string(), d);
  Store store((dir / "eval.h5").string());

  std::vector<int64_t> idx(size_t(store.size()));
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = int64_t(i);
  for (std::string side : {"right", "left"}) {
    CollateOptions o;
    o.max_len = 12;  // cuts most sentences: words past the cut have no token
    o.padding_side = side;
    o.pad_id = tok.pad_id();
    Batch batch = collate(store, idx, o);
    batch["labels"] = batch["token_labels"];
    batch.num_targets = batch["labels"].ne(kIgnore).sum().item<int64_t>();  // as LsLlamaTask::prepare
    int64_t targets = 0;
    for (int64_t b = 0; b < batch.size(); ++b) {
      std::vector<int32_t> wid, tl;
      for (int64_t t = 0; t < batch["input_ids"].size(1); ++t) {
        wid.push_back(int32_t(batch["word_ids"][b][t].item<int64_t>()));
        tl.push_back(int32_t(batch["labels"][b][t].item<int64_t>()));
        if (batch["attention_mask"][b][t].item<int64_t>() == 0) {
          EXPECT_EQ(tl.back(), kIgnore);
          EXPECT_EQ(wid.back(), kNoWord);
        }
        targets += tl.back() != kIgnore;
      }
      auto gold = store.get<int32_t>("word_tags", b).vec();
      auto words = word_predictions(wid, tl, int64_t(gold.size()), -1);
      // Right truncation keeps a prefix of the words: those are labelled, the rest are missing.
      bool cut = false;
      for (size_t w = 0; w < gold.size(); ++w) {
        if (words[w] == -1) {
          cut = true;
        } else {
          EXPECT_FALSE(cut) << side << " row " << b << ": word " << w << " follows a cut word";
        }
        if (words[w] != -1) {
          EXPECT_EQ(words[w], gold[w]);
        }
      }
    }
    EXPECT_EQ(targets, batch.num_targets) << side;
  }
  fs::remove_all(dir);
}
