// Preprocessing into stores on the real files, reading them back, the errors a user can make,
// collate and the sampler. The stores are those of the methods that make them (LS-LLaMA's
// classification and token classification, lm's text and conversations), through their encoders.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "data/align.h"
#include "data/collate.h"
#include "data/preprocess.h"
#include "data/sampler.h"
#include "data/store.h"
#include "data/tokenizer.h"
#include "methods/registry.h"
#include "train/stores.h"

using namespace kiln::data;
namespace fs = std::filesystem;

namespace {

const std::string kShared = KILN_SHARED_DIR;
const std::string kData = kShared + "/data/";

const Tokenizer& llama2() {
  static Tokenizer t(kShared + "/models/llama2-tokenizer");
  return t;
}

std::string temp_dir(const std::string& name) {
  auto d = fs::path(testing::TempDir()) / "kiln_store" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

std::string temp_file(const std::string& name, const std::string& content) {
  auto p = fs::path(temp_dir("files-" + name)) / name;
  std::ofstream(p, std::ios::binary) << content;
  return p.string();
}

// A recipe from YAML lines for the data section; the model is the LLaMA-2 tokenizer folder.
kiln::Recipe recipe(const std::string& data_yaml, const std::string& store_dir,
                    const std::string& model = kShared + "/models/llama2-tokenizer") {
  std::string y = "name: t\nmodel:\n  path: " + model + "\ndata:\n  store_dir: " + store_dir + "\n" + data_yaml;
  return kiln::read_recipe_tree(kiln::recipe::parse_string(y, "test.yaml"), "test.yaml");
}

// The method whose stores a data section makes: lm for text and conversations, else ls_llama.
std::unique_ptr<kiln::train::Task> method_for(const kiln::Recipe& r) {
  bool lm = r.data.format == "text" || r.data.format == "conversation";
  return kiln::methods::make_task(lm ? "lm" : "ls_llama");
}

std::vector<SplitSummary> preprocess(const kiln::Recipe& r, const Tokenizer& tok) {
  return kiln::data::preprocess(r, *method_for(r)->encoder(r), tok);
}

// collate, completed as the recipe's method completes its batches (labels, target count).
Batch collate_for(const kiln::Recipe& r, const Store& s, const std::vector<int64_t>& idx, const CollateOptions& o) {
  Batch b = collate(s, idx, o);
  auto task = method_for(r);
  dynamic_cast<kiln::train::StoreTask&>(*task).prepare(kiln::train::Split::train, b);
  return b;
}

template <typename F>
std::string expect_input_error(F f, const std::string& needle) {
  try {
    f();
  } catch (const kiln::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no InputError; expected one containing " << needle;
  return "";
}

}  // namespace

TEST(Preprocess, Sst2ClassificationStore) {
  std::string dir = temp_dir("sst2");
  auto r = recipe("  format: tsv\n  train: " + kData + "sst2/dev.tsv\n  eval: " + kData + "sst2/dev.tsv\n  max_len: 32\n", dir);
  auto sums = preprocess(r, llama2());
  ASSERT_EQ(sums.size(), 2u);
  EXPECT_EQ(sums[0].examples, 872);
  Store s(dir + "/train.h5");
  s.check_tokenizer(llama2());
  EXPECT_EQ(s.kind(), "classification");
  EXPECT_EQ(s.size(), 872);
  EXPECT_EQ(s.label_names(), (std::vector<std::string>{"0", "1"}));
  int ones = 0;
  for (int64_t i = 0; i < s.size(); ++i) ones += s.value<int32_t>("labels", i);
  EXPECT_EQ(ones, 444);
  auto want = llama2().encode("it 's a charming and often affecting journey .", true);
  EXPECT_EQ(s.ids(0).vec(), want);
  EXPECT_EQ(s.source_line(0), 2);
  // Right truncation to max_len, counted in the metadata.
  int64_t longest = 0;
  for (int64_t i = 0; i < s.size(); ++i) longest = std::max(longest, s.length(i));
  EXPECT_EQ(longest, 32);
  EXPECT_GT(s.meta().truncated, 0);
  EXPECT_EQ(s.meta().sources.at(0).sha256, "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0");
  EXPECT_NE(s.meta().recipe.find("sst2/dev.tsv"), std::string::npos);
  // Same recipe, same bytes: nothing in the file depends on the time it was written.
  std::string first = kiln::sha256_file(dir + "/eval.h5");
  preprocess(r, llama2());
  EXPECT_EQ(kiln::sha256_file(dir + "/eval.h5"), first);
  // A store made with another tokenizer is refused.
  Tokenizer other(kShared + "/models/stories260K/hf");
  expect_input_error([&] { s.check_tokenizer(other); }, "the store was made with another tokenizer");
}

TEST(Preprocess, TwitterCsvLabels) {
  std::string dir = temp_dir("twitter");
  auto r = recipe("  format: csv\n  text_field: text\n  train: " + kData +
                      "twitter_financial_news_sentiment/sent_train.csv\n  max_len: 64\n",
                  dir, kShared + "/models/stories260K/hf");
  preprocess(r, Tokenizer(kShared + "/models/stories260K/hf"));
  Store s(dir + "/train.h5");
  EXPECT_EQ(s.size(), 9543);
  EXPECT_EQ(s.label_names(), (std::vector<std::string>{"0", "1", "2"}));
  std::vector<int> counts(3);
  for (int64_t i = 0; i < s.size(); ++i) ++counts[size_t(s.value<int32_t>("labels", i))];
  EXPECT_EQ(counts, (std::vector<int>{1442, 1923, 6178}));
}

TEST(Preprocess, ConllTokenClassificationStore) {
  std::string dir = temp_dir("conll");
  auto r = recipe("  format: conll\n  train: " + kData + "conll2003/eng.testa\n  max_len: 512\n", dir);
  preprocess(r, llama2());
  Store s(dir + "/train.h5");
  EXPECT_EQ(s.kind(), "token_classification");
  ASSERT_EQ(s.size(), 3250);
  EXPECT_EQ(s.meta().truncated, 0);
  EXPECT_EQ(s.label_names().front(), "O");
  EXPECT_EQ(s.num_labels(), 9);  // O + B/I of PER, LOC, ORG, MISC (BIO)
  int64_t words = 0;
  for (int64_t i = 0; i < s.size(); ++i) {
    auto tags = s.get<int32_t>("word_tags", i);
    auto tl = s.get<int32_t>("token_labels", i);
    auto wid = s.get<int32_t>("word_ids", i);
    words += tags.size();
    // One labelled sub-token per word, carrying that word's tag; specials unlabelled.
    std::vector<int32_t> labelled;
    for (int64_t t = 0; t < tl.size(); ++t)
      if (tl[t] != kIgnore) {
        labelled.push_back(tl[t]);
        ASSERT_EQ(tl[t], tags[wid[t]]);
      }
    ASSERT_EQ(labelled, tags.vec()) << "example " << i;
    ASSERT_EQ(wid[0], kNoWord);
  }
  EXPECT_EQ(words, 51362);
  // Word-by-word ids equal the ids of the space-joined sentence (the first is "CRICKET - ...").
  std::vector<int32_t> first = s.ids(0).vec();
  EXPECT_EQ(first, llama2().encode("CRICKET - LEICESTERSHIRE TAKE OVER AT TOP AFTER INNINGS VICTORY .", true));
}

TEST(Preprocess, ConversationLossOnAssistantTurns) {
  std::string p = temp_file(
      "conv.json",
      "[{\"conversations\": [{\"from\": \"human\", \"value\": \"Text: Apple hired Tim Cook.\"}, {\"from\": \"gpt\", "
      "\"value\": \"I've read this text.\"}, {\"from\": \"human\", \"value\": \"What describes person in the text?\"}, "
      "{\"from\": \"gpt\", \"value\": \"[\\\"Tim Cook\\\"]\"}]}]");
  std::string dir = temp_dir("conv");
  preprocess(recipe("  format: conversation\n  train: " + p + "\n  max_len: 256\n", dir), llama2());
  Store s(dir + "/train.h5");
  EXPECT_EQ(s.kind(), "lm");
  ASSERT_EQ(s.size(), 1);
  auto ids = s.ids(0).vec();
  auto mask = s.get<uint8_t>("loss_mask", 0).vec();
  // The targets are exactly each answer followed by </s>.
  std::vector<std::vector<int32_t>> spans;
  for (size_t t = 0; t < ids.size(); ++t)
    if (mask[t] && (t == 0 || !mask[t - 1])) {
      spans.push_back({ids[t]});
    } else if (mask[t]) {
      spans.back().push_back(ids[t]);
    }
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(llama2().decode(spans[0]), "I've read this text.");
  EXPECT_EQ(spans[0].back(), llama2().eos_id());
  EXPECT_EQ(llama2().decode(spans[1]), "[\"Tim Cook\"]");
  // The whole sequence reads as FastChat's ie_as_qa prompt.
  EXPECT_EQ(llama2().decode(ids),
            "A virtual assistant answers questions from a user based on the provided text. USER: Text: Apple hired "
            "Tim Cook. ASSISTANT: I've read this text. USER: What describes person in the text? ASSISTANT: "
            "[\"Tim Cook\"]");
}

TEST(Preprocess, PlainTextPackedIntoWindows) {
  std::string dir = temp_dir("text");
  preprocess(recipe("  format: text\n  skip_lines: 1\n  train: " + kData + "russian_corpus/corpus_500.txt\n  max_len: 512\n",
                    dir, kShared + "/models/stories260K/hf"),
             Tokenizer(kShared + "/models/stories260K/hf"));
  Store s(dir + "/train.h5");
  EXPECT_EQ(s.meta().sources.at(0).records, 499);
  for (int64_t i = 0; i + 1 < s.size(); ++i) ASSERT_EQ(s.length(i), 512);
  EXPECT_LE(s.length(s.size() - 1), 512);
  EXPECT_EQ(s.num_tokens(), (s.size() - 1) * 512 + s.length(s.size() - 1));
  EXPECT_EQ(s.ids(0)[0], 1);  // the first document's BOS
}

TEST(Preprocess, UserErrors) {
  std::string dir = temp_dir("errors");
  std::string tr = temp_file("tr.tsv", "sentence\tlabel\na\t0\nb\t1\n");
  std::string ev = temp_file("ev.tsv", "sentence\tlabel\nc\t0\nd\t2\ne\tneutral\n");
  // Eval labels outside the train split's set: all of them, with file:line.
  std::string msg = expect_input_error(
      [&] { preprocess(recipe("  format: tsv\n  train: " + tr + "\n  eval: " + ev + "\n", dir), llama2()); },
      "2 labels outside the train split's set [0, 1]");
  EXPECT_NE(msg.find("`2` (" + ev + ":3)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("`neutral` (" + ev + ":4)"), std::string::npos) << msg;
  expect_input_error(
      [&] { preprocess(recipe("  format: tsv\n  labels: [\"0\"]\n  train: " + tr + "\n", dir), llama2()); },
      "1 label outside the declared (data.labels) set [0]: `1` (" + tr + ":3)");
  // A CoNLL tag outside the set is named at its own line, not at its sentence's first.
  std::string ctr = temp_file("tr.conll", "EU I-ORG\nsays O\n\nBonn I-LOC\n");
  std::string cev = temp_file("ev.conll", "a O\nb O\nc O\nPeter I-PER\n");
  expect_input_error(
      [&] { preprocess(recipe("  format: conll\n  train: " + ctr + "\n  eval: " + cev + "\n", dir), llama2()); },
      "`B-PER` (" + cev + ":4)");
  std::string empty = temp_file("empty.tsv", "sentence\tlabel\n\n");
  expect_input_error([&] { preprocess(recipe("  format: tsv\n  train: " + empty + "\n", dir), llama2()); },
                     empty + ": no tsv records");
  std::string bad = temp_file("bad.tsv", "sentence\tlabel\nonly text\n");
  expect_input_error(
      [&] { preprocess(recipe("  format: tsv\n  on_bad_record: skip\n  train: " + bad + "\n", dir), llama2()); },
      bad + ": no tsv records left, 1 malformed ones skipped");
  std::string long_text = temp_file("long.tsv", "sentence\tlabel\nshort\t0\none two three four five six seven\t1\n");
  expect_input_error(
      [&] { preprocess(recipe("  format: tsv\n  max_len: 4\n  truncation: error\n  train: " + long_text + "\n", dir), llama2()); },
      long_text + ":3: 8 tokens, more than data.max_len = 4");
  expect_input_error([&] { Store(dir + "/missing.h5"); }, "data store not found");
  std::string not_h5 = temp_file("not.h5", "plain text");
  expect_input_error([&] { Store s(not_h5); }, "not an HDF5 file");
}

TEST(Collate, PaddingSidesTruncationAndLabels) {
  std::string dir = temp_dir("collate");
  std::string tsv = temp_file("c.tsv", "sentence\tlabel\nhello world\t1\na much longer sentence than the first one\t0\n");
  auto r = recipe("  format: tsv\n  max_len: 64\n  train: " + tsv + "\n", dir);
  preprocess(r, llama2());
  Store s(dir + "/train.h5");
  int64_t n0 = s.length(0), n1 = s.length(1);
  ASSERT_LT(n0, n1);
  CollateOptions o = collate_options(r.data, s);
  Batch b = collate_for(r, s, {0, 1}, o);
  EXPECT_EQ(b["input_ids"].sizes(), (std::vector<int64_t>{2, n1}));
  EXPECT_EQ(b["input_ids"].scalar_type(), at::kLong);
  EXPECT_EQ(b["attention_mask"][0].sum().item<int64_t>(), n0);
  EXPECT_EQ(b["attention_mask"][0][0].item<int64_t>(), 1);             // right padding: tokens first
  EXPECT_EQ(b["input_ids"][0][n1 - 1].item<int64_t>(), s.meta().pad_id);
  EXPECT_EQ(b["labels"][0].item<int64_t>(), 1);
  EXPECT_EQ(b.num_targets, 2);
  o.padding_side = "left";
  Batch l = collate_for(r, s, {0, 1}, o);
  EXPECT_EQ(l["attention_mask"][0][0].item<int64_t>(), 0);             // left padding: tokens last
  EXPECT_EQ(l["input_ids"][0][n1 - 1].item<int64_t>(), s.ids(0)[n0 - 1]);
  // Truncation at collate: right keeps the head, left keeps BOS + the tail, error refuses.
  o.max_len = 4;
  o.padding_side = "right";
  Batch tr = collate_for(r, s, {1}, o);
  EXPECT_EQ(tr["input_ids"][0][3].item<int64_t>(), s.ids(1)[3]);
  o.truncation = "left";
  Batch tl = collate_for(r, s, {1}, o);
  EXPECT_EQ(tl["input_ids"][0][0].item<int64_t>(), 1);
  EXPECT_EQ(tl["input_ids"][0][1].item<int64_t>(), s.ids(1)[n1 - 3]);
  EXPECT_EQ(tl["input_ids"][0][3].item<int64_t>(), s.ids(1)[n1 - 1]);
  o.truncation = "error";
  expect_input_error([&] { collate_for(r, s, {1}, o); }, "more than data.max_len = 4");
}

TEST(Collate, TokenLabelsAndWordIds) {
  std::string conll = temp_file("c.conll", "EU I-ORG\nrejects O\nGermanophobia I-MISC\n\nPeter I-PER\n");
  std::string dir = temp_dir("collate-conll");
  auto r = recipe("  format: conll\n  train: " + conll + "\n", dir);
  preprocess(r, llama2());
  Store s(dir + "/train.h5");
  Batch b = collate_for(r, s, {0, 1}, collate_options(r.data, s));
  EXPECT_EQ(b["labels"].dim(), 2);
  EXPECT_EQ(b.num_targets, 4);  // four words
  EXPECT_EQ(b["labels"][0][0].item<int64_t>(), kIgnore);  // BOS
  EXPECT_EQ(b["word_ids"][1][b["word_ids"].size(1) - 1].item<int64_t>(), kNoWord);  // padding
  // Back to words through word_predictions: predicting the gold labels gives the gold word tags.
  auto wid = std::vector<int32_t>(s.get<int32_t>("word_ids", 0).begin(), s.get<int32_t>("word_ids", 0).end());
  auto tl = s.get<int32_t>("token_labels", 0).vec();
  EXPECT_EQ(word_predictions(wid, tl, 3, 0), s.get<int32_t>("word_tags", 0).vec());
  EXPECT_EQ(s.label_names()[size_t(s.get<int32_t>("word_tags", 0)[2])], "B-MISC");
}

TEST(Sampler, GlobalBatchesDoNotDependOnWorldSize) {
  const int64_t n = 103, G = 8;
  Sampler one(n, G, 1, 0, 7);
  Sampler r0(n, G, 2, 0, 7), r1(n, G, 2, 1, 7);
  for (int step = 0; step < 40; ++step) {  // crosses epoch boundaries (13 batches per epoch)
    auto g = one.next();
    auto a = r0.next(), b = r1.next();
    std::vector<int64_t> joined = a;
    joined.insert(joined.end(), b.begin(), b.end());
    ASSERT_EQ(joined, g) << "step " << step;
    if (g.size() == size_t(G)) {
      ASSERT_EQ(a.size(), size_t(G / 2));
    }
  }
  EXPECT_EQ(one.epoch(), 3);
  // Each epoch is a permutation, different from the last.
  auto e0 = one.epoch_order(0), e1 = one.epoch_order(1);
  EXPECT_NE(e0, e1);
  std::sort(e0.begin(), e0.end());
  std::vector<int64_t> iota(n);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(e0, iota);
  EXPECT_EQ(Sampler(n, G, 1, 0, 7, false).epoch_order(3), iota);
}

TEST(Sampler, ResumesOnAnotherWorldSize) {
  Sampler full(50, 4, 1, 0, 1);
  for (int i = 0; i < 17; ++i) full.next();
  Sampler::State st = full.state();
  EXPECT_EQ(st.epoch, 1);
  Sampler a(50, 4, 2, 0, 1), b(50, 4, 2, 1, 1);
  a.set_state(st), b.set_state(st);
  for (int i = 0; i < 20; ++i) {
    auto g = full.next();
    auto x = a.next(), y = b.next();
    x.insert(x.end(), y.begin(), y.end());
    ASSERT_EQ(x, g);
  }
  expect_input_error([&] { a.set_state({0, 51}); }, "does not fit a dataset of 50 examples");
  expect_input_error([&] { Sampler(50, 6, 4, 0, 1); }, "not a multiple of the 4 ranks");
}

TEST(Sampler, GroupByLengthAndDropLast) {
  std::vector<int64_t> len(1000);
  for (size_t i = 0; i < len.size(); ++i) len[i] = int64_t((i * 7919) % 97);
  Sampler s(1000, 4, 1, 0, 3, true, len, true);
  EXPECT_EQ(s.batches_per_epoch(), 250);
  auto order = s.epoch_order(0);
  // Within each window of 50 global batches the lengths run longest first.
  for (size_t i = 1; i < 200; ++i) ASSERT_GE(len[size_t(order[i - 1])], len[size_t(order[i])]);
  std::set<int64_t> all(order.begin(), order.end());
  EXPECT_EQ(all.size(), 1000u);
  Sampler d(10, 4, 1, 0, 3, true, {}, true);
  EXPECT_EQ(d.batches_per_epoch(), 2);
  d.next(), d.next();
  d.next();
  EXPECT_EQ(d.epoch(), 1);
}
