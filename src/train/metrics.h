// Evaluation metrics. Each works on the predictions of the whole eval split, or on counts that add
// up across ranks (ClassCounts, SpanCounts): never average per-rank scores, since a mean of
// per-rank F1s is not the F1 of the whole set.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kiln::train {

double accuracy(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold);

// Per-class true positives, false positives and false negatives of single-label classification.
struct ClassCounts {
  std::map<int64_t, int64_t> tp, fp, fn;
  int64_t correct = 0, total = 0;
  void add(int64_t pred, int64_t gold);
  ClassCounts& operator+=(const ClassCounts& o);
};
ClassCounts class_counts(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold);

// Macro F1 as scikit-learn computes it by default: the unweighted mean of per-class F1 over every
// class that occurs in the gold labels or the predictions (a class with no support and no
// prediction would be 0/0 and is left out). Micro F1 pools the counts; for single-label
// classification it equals accuracy.
double macro_f1(const ClassCounts& c);
double micro_f1(const ClassCounts& c);

// CoNLL span (chunk) evaluation, exactly as conlleval.pl: a span counts as correct only when its
// type and both boundaries match. Tags are `B-X`, `I-X`, `E-X`, `S-X` or `O`; the same chunk rules
// read IOB1 (I- starts a chunk after O or another type; B- only separates adjacent chunks of one
// type) and BIO/IOB2, so either scheme, or a mix, is scored as conlleval would.
struct SpanCounts {
  int64_t correct_chunks = 0, gold_chunks = 0, pred_chunks = 0;
  int64_t correct_tags = 0, tokens = 0;
  std::map<std::string, int64_t> correct_by_type, gold_by_type, pred_by_type;
  SpanCounts& operator+=(const SpanCounts& o);
};
// One sentence; gold and pred have the same length (InternalError otherwise).
void add_sentence(SpanCounts& c, const std::vector<std::string>& gold, const std::vector<std::string>& pred);
SpanCounts span_counts(const std::vector<std::vector<std::string>>& gold,
                       const std::vector<std::vector<std::string>>& pred);

struct PRF {
  double precision = 0, recall = 0, f1 = 0;
};
PRF span_prf(const SpanCounts& c);                         // overall, fractions in [0, 1]
PRF span_prf(const SpanCounts& c, const std::string& type);
double tag_accuracy(const SpanCounts& c);                  // conlleval's token "accuracy"

// Area under the ROC curve of scores for the positive class (label 1 vs 0). Tied scores count
// half, as the trapezoidal ROC curve through tied thresholds does (Mann-Whitney U with mid-ranks).
// NaN when either class is absent.
double auc_roc(const std::vector<double>& score, const std::vector<int64_t>& label);

}  // namespace kiln::train
