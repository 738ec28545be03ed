// Metrics against hand-computed cases. Every expected number below is worked out in the comments.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "train/eval_records.h"
#include "train/metrics.h"

using namespace kiln::train;

TEST(Metrics, AccuracyAndF1) {
  // gold 0 0 1 1 2 2, pred 0 1 1 1 2 0:
  // class 0: tp 1, fp 1 (last), fn 1 (second)  -> F1 = 2/(2+1+1) = 0.5
  // class 1: tp 2, fp 1, fn 0                 -> F1 = 4/5 = 0.8
  // class 2: tp 1, fp 0, fn 1                 -> F1 = 2/3
  std::vector<int64_t> gold{0, 0, 1, 1, 2, 2}, pred{0, 1, 1, 1, 2, 0};
  EXPECT_DOUBLE_EQ(accuracy(pred, gold), 4.0 / 6.0);
  auto c = class_counts(pred, gold);
  EXPECT_NEAR(macro_f1(c), (0.5 + 0.8 + 2.0 / 3.0) / 3.0, 1e-12);
  // micro: tp 4, fp 2, fn 2 -> 8/12, equal to accuracy for single-label data
  EXPECT_NEAR(micro_f1(c), 8.0 / 12.0, 1e-12);
}

TEST(Metrics, MacroF1CountsPredictedOnlyClasses) {
  // scikit-learn: f1_score([0,0],[0,1],average="macro") = (2/3 + 0)/2: class 1 is predicted, never gold.
  auto c = class_counts({0, 1}, {0, 0});
  EXPECT_NEAR(macro_f1(c), 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(micro_f1(c), 0.5, 1e-12);
}

TEST(Metrics, ClassCountsAddAcrossParts) {
  std::vector<int64_t> gold{0, 0, 1, 1, 2, 2, 1}, pred{0, 1, 1, 1, 2, 0, 2};
  auto whole = class_counts(pred, gold);
  auto a = class_counts({pred.begin(), pred.begin() + 3}, {gold.begin(), gold.begin() + 3});
  auto b = class_counts({pred.begin() + 3, pred.end()}, {gold.begin() + 3, gold.end()});
  a += b;
  EXPECT_DOUBLE_EQ(macro_f1(a), macro_f1(whole));
  EXPECT_DOUBLE_EQ(micro_f1(a), micro_f1(whole));
}

namespace {
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b < s.size()) {
    size_t e = s.find(' ', b);
    if (e == std::string::npos) e = s.size();
    if (e > b) out.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}
}  // namespace

TEST(SpanF1, Iob1) {
  // IOB1: I- opens a chunk after O or another type; B- only separates two adjacent chunks of a type.
  // gold chunks: PER[0,1], LOC[3], LOC[4], ORG[6]          -> 4
  // pred chunks: PER[0,1], LOC[3,4], MISC[6]               -> 3
  // correct: PER[0,1] only (LOC[3,4] is not LOC[3]; MISC is not ORG) -> 1
  // P = 1/3, R = 1/4, F1 = 2PR/(P+R) = 2/7; tags equal at 0,1,2,3,5 -> 5/7
  auto gold = split("I-PER I-PER O I-LOC B-LOC O I-ORG");
  auto pred = split("I-PER I-PER O I-LOC I-LOC O I-MISC");
  SpanCounts c;
  add_sentence(c, gold, pred);
  EXPECT_EQ(c.gold_chunks, 4);
  EXPECT_EQ(c.pred_chunks, 3);
  EXPECT_EQ(c.correct_chunks, 1);
  PRF r = span_prf(c);
  EXPECT_NEAR(r.precision, 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(r.recall, 0.25, 1e-12);
  EXPECT_NEAR(r.f1, 2.0 / 7.0, 1e-12);
  EXPECT_NEAR(tag_accuracy(c), 5.0 / 7.0, 1e-12);
  // Per type: LOC gold 2, pred 1, correct 0; PER 1/1/1.
  EXPECT_DOUBLE_EQ(span_prf(c, "LOC").f1, 0.0);
  EXPECT_DOUBLE_EQ(span_prf(c, "PER").f1, 1.0);
}

TEST(SpanF1, BioGivesTheSameChunksAsIob1) {
  // The sentence above in BIO: every chunk starts with B-.
  auto gold = split("B-PER I-PER O B-LOC B-LOC O B-ORG");
  auto pred = split("B-PER I-PER O B-LOC I-LOC O B-MISC");
  auto c = span_counts({gold}, {pred});
  EXPECT_EQ(c.gold_chunks, 4);
  EXPECT_EQ(c.pred_chunks, 3);
  EXPECT_EQ(c.correct_chunks, 1);
  EXPECT_NEAR(span_prf(c).f1, 2.0 / 7.0, 1e-12);
}

TEST(SpanF1, BoundariesMustMatch) {
  // Right type, right start, wrong end: not correct. A chunk that runs to the end of a sentence is
  // closed by the sentence boundary (and counted when it matches).
  auto c = span_counts({split("B-PER I-PER O"), split("O B-LOC I-LOC")},
                       {split("B-PER O O"), split("O B-LOC I-LOC")});
  EXPECT_EQ(c.gold_chunks, 2);
  EXPECT_EQ(c.pred_chunks, 2);
  EXPECT_EQ(c.correct_chunks, 1);  // LOC[1,2] of sentence 2
  EXPECT_DOUBLE_EQ(span_prf(c).f1, 0.5);
  // An I- continuing a chunk of another type starts a new chunk (conlleval's type rule):
  // I-PER I-LOC is two chunks.
  auto d = span_counts({split("I-PER I-LOC")}, {split("B-PER B-LOC")});
  EXPECT_EQ(d.gold_chunks, 2);
  EXPECT_EQ(d.correct_chunks, 2);
}

TEST(SpanF1, CountsAddAcrossSentences) {
  auto g1 = split("B-PER I-PER O B-LOC"), p1 = split("B-PER I-PER O O");
  auto g2 = split("I-ORG I-ORG O"), p2 = split("I-ORG I-ORG O");
  auto whole = span_counts({g1, g2}, {p1, p2});
  SpanCounts a = span_counts({g1}, {p1});
  a += span_counts({g2}, {p2});
  EXPECT_EQ(a.correct_chunks, whole.correct_chunks);
  EXPECT_EQ(a.gold_chunks, whole.gold_chunks);
  EXPECT_EQ(a.pred_chunks, whole.pred_chunks);
  EXPECT_EQ(whole.gold_chunks, 3);
  EXPECT_EQ(whole.correct_chunks, 2);
}

TEST(Auc, Ties) {
  // positives 0.35 0.8 0.4, negatives 0.1 0.4: of the 6 (pos, neg) pairs, 4 are ordered right and
  // one (0.4, 0.4) is tied and counts 1/2 -> 4.5 / 6 = 0.75 (scikit-learn's roc_auc_score agrees).
  EXPECT_DOUBLE_EQ(auc_roc({0.1, 0.4, 0.35, 0.8, 0.4}, {0, 0, 1, 1, 1}), 0.75);
  // All scores tied: 0.5.
  EXPECT_DOUBLE_EQ(auc_roc({0.3, 0.3, 0.3, 0.3}, {0, 1, 0, 1}), 0.5);
  // Perfect and reversed.
  EXPECT_DOUBLE_EQ(auc_roc({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(auc_roc({0.9, 0.8, 0.2, 0.1}, {0, 0, 1, 1}), 0.0);
  EXPECT_TRUE(std::isnan(auc_roc({0.1, 0.2}, {1, 1})));
}

TEST(EvalRecords, SerializeAndSort) {
  EvalRecords r;
  r.example = {5, 2, 9};
  r.ints["pred"] = {1, 0, 2};
  r.ints["gold"] = {1, 1, 2};
  r.reals["score"] = {0.5, 0.25, 0.125};
  r.seqs["pred_tags"] = {{1, 2}, {}, {3}};
  r.seqs["gold_tags"] = {{1, 1}, {}, {3}};
  r.texts["pred_text"] = {"a", "", "c"};
  r.texts["gold_text"] = {"a", "b", "c"};
  r.vecs["scores"] = {{0.5}, {0.25, 0.75}, {}};
  r.loss_sum = 1.5;
  r.loss_count = 7;
  EvalRecords back = EvalRecords::deserialize(r.serialize());
  back.sort_by_example();
  EXPECT_EQ(back.example, (std::vector<int64_t>{2, 5, 9}));
  EXPECT_EQ(back.ints_of("pred"), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(back.reals_of("score"), (std::vector<double>{0.25, 0.5, 0.125}));
  EXPECT_EQ(back.seqs_of("pred_tags")[1], (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(back.texts_of("gold_text")[0], "b");
  EXPECT_EQ(back.vecs_of("scores")[0], (std::vector<double>{0.25, 0.75}));
  EXPECT_TRUE(back.ints_of("absent").empty());
  // A column of another length than the examples is a broken method, caught before metrics run.
  r.ints["pred"].pop_back();
  EXPECT_THROW(r.sort_by_example(), kiln::InternalError);
  EXPECT_EQ(back.loss_count, 7);
  EXPECT_DOUBLE_EQ(back.loss_sum, 1.5);
}
