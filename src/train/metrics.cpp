#include "train/metrics.h"

#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace kiln::train {

double accuracy(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold) {
  KILN_CHECK(pred.size() == gold.size(), "accuracy: {} predictions for {} labels", pred.size(), gold.size());
  if (gold.empty()) return std::numeric_limits<double>::quiet_NaN();
  int64_t ok = 0;
  for (size_t i = 0; i < gold.size(); ++i) ok += pred[i] == gold[i];
  return double(ok) / double(gold.size());
}

void ClassCounts::add(int64_t pred, int64_t gold) {
  ++total;
  if (pred == gold) {
    ++correct;
    ++tp[gold];
  } else {
    ++fp[pred];
    ++fn[gold];
  }
  // Classes seen only as misses still need an entry, so macro F1 counts them with F1 = 0.
  tp.emplace(pred, 0);
  tp.emplace(gold, 0);
}

ClassCounts& ClassCounts::operator+=(const ClassCounts& o) {
  for (auto& [k, v] : o.tp) tp[k] += v;
  for (auto& [k, v] : o.fp) fp[k] += v;
  for (auto& [k, v] : o.fn) fn[k] += v;
  correct += o.correct;
  total += o.total;
  return *this;
}

ClassCounts class_counts(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold) {
  KILN_CHECK(pred.size() == gold.size(), "class counts: {} predictions for {} labels", pred.size(), gold.size());
  ClassCounts c;
  for (size_t i = 0; i < gold.size(); ++i) c.add(pred[i], gold[i]);
  return c;
}

namespace {
double f1_of(int64_t tp, int64_t fp, int64_t fn) {
  // F1 = 2TP / (2TP + FP + FN): the same as 2PR/(P+R), and 0 (not NaN) when TP is 0.
  int64_t d = 2 * tp + fp + fn;
  return d == 0 ? 0.0 : 2.0 * double(tp) / double(d);
}
int64_t get(const std::map<int64_t, int64_t>& m, int64_t k) {
  auto it = m.find(k);
  return it == m.end() ? 0 : it->second;
}
}  // namespace

double macro_f1(const ClassCounts& c) {
  if (c.tp.empty()) return std::numeric_limits<double>::quiet_NaN();
  double sum = 0;
  for (auto& [k, tp] : c.tp) sum += f1_of(tp, get(c.fp, k), get(c.fn, k));
  return sum / double(c.tp.size());
}

double micro_f1(const ClassCounts& c) {
  int64_t tp = 0, fp = 0, fn = 0;
  for (auto& [k, v] : c.tp) tp += v;
  for (auto& [k, v] : c.fp) fp += v;
  for (auto& [k, v] : c.fn) fn += v;
  if (tp + fp + fn == 0) return std::numeric_limits<double>::quiet_NaN();
  return f1_of(tp, fp, fn);
}

// ---- conlleval ----
// The chunk rules of conlleval.pl, with the E- and S- (IOBES) cases of its Python port; for B/I/O
// tags both give the same answers.

namespace {
struct Tag {
  std::string prefix, type;  // "B", "PER"; "O", ""
};
// conlleval splits at the first hyphen: /^([^-]*)-(.*)$/.
Tag split_tag(const std::string& t) {
  auto p = t.find('-');
  if (p == std::string::npos) return {t, ""};
  return {t.substr(0, p), t.substr(p + 1)};
}

bool end_of_chunk(const Tag& prev, const Tag& cur) {
  const std::string &p = prev.prefix, &t = cur.prefix;
  if (p == "E" || p == "S") return true;
  if ((p == "B" || p == "I") && (t == "B" || t == "S" || t == "O")) return true;
  if (p != "O" && p != "." && prev.type != cur.type) return true;
  if (p == "]" || p == "[") return true;
  return false;
}

bool start_of_chunk(const Tag& prev, const Tag& cur) {
  const std::string &p = prev.prefix, &t = cur.prefix;
  if (t == "B" || t == "S") return true;
  if ((p == "E" || p == "S" || p == "O") && (t == "E" || t == "I")) return true;
  if (t != "O" && t != "." && prev.type != cur.type) return true;
  if (t == "[" || t == "]") return true;
  return false;
}
}  // namespace

void add_sentence(SpanCounts& c, const std::vector<std::string>& gold, const std::vector<std::string>& pred) {
  KILN_CHECK(gold.size() == pred.size(), "span F1: sentence with {} gold and {} predicted tags", gold.size(),
             pred.size());
  // conlleval carries its state across sentences, but every sentence boundary is an `O` token, so a
  // sentence can be scored on its own: start from O and close with an O that is not counted.
  Tag last_g{"O", ""}, last_p{"O", ""};
  bool in_correct = false;
  for (size_t i = 0; i <= gold.size(); ++i) {
    bool boundary = i == gold.size();
    Tag g = boundary ? Tag{"O", ""} : split_tag(gold[i]);
    Tag p = boundary ? Tag{"O", ""} : split_tag(pred[i]);
    if (in_correct) {
      bool end_g = end_of_chunk(last_g, g), end_p = end_of_chunk(last_p, p);
      if (end_g && end_p && last_p.type == last_g.type) {
        in_correct = false;
        ++c.correct_chunks;
        ++c.correct_by_type[last_g.type];
      } else if (end_g != end_p || p.type != g.type) {
        in_correct = false;
      }
    }
    bool start_g = start_of_chunk(last_g, g), start_p = start_of_chunk(last_p, p);
    if (start_g && start_p && p.type == g.type) in_correct = true;
    if (start_g) {
      ++c.gold_chunks;
      ++c.gold_by_type[g.type];
    }
    if (start_p) {
      ++c.pred_chunks;
      ++c.pred_by_type[p.type];
    }
    if (!boundary) {
      ++c.tokens;
      if (gold[i] == pred[i]) ++c.correct_tags;
    }
    last_g = g;
    last_p = p;
  }
}

SpanCounts& SpanCounts::operator+=(const SpanCounts& o) {
  correct_chunks += o.correct_chunks;
  gold_chunks += o.gold_chunks;
  pred_chunks += o.pred_chunks;
  correct_tags += o.correct_tags;
  tokens += o.tokens;
  for (auto& [k, v] : o.correct_by_type) correct_by_type[k] += v;
  for (auto& [k, v] : o.gold_by_type) gold_by_type[k] += v;
  for (auto& [k, v] : o.pred_by_type) pred_by_type[k] += v;
  return *this;
}

SpanCounts span_counts(const std::vector<std::vector<std::string>>& gold,
                       const std::vector<std::vector<std::string>>& pred) {
  KILN_CHECK(gold.size() == pred.size(), "span F1: {} gold and {} predicted sentences", gold.size(), pred.size());
  SpanCounts c;
  for (size_t i = 0; i < gold.size(); ++i) add_sentence(c, gold[i], pred[i]);
  return c;
}

namespace {
PRF prf(int64_t correct, int64_t gold, int64_t pred) {
  PRF r;
  r.precision = pred > 0 ? double(correct) / double(pred) : 0.0;
  r.recall = gold > 0 ? double(correct) / double(gold) : 0.0;
  r.f1 = r.precision + r.recall > 0 ? 2 * r.precision * r.recall / (r.precision + r.recall) : 0.0;
  return r;
}
int64_t get(const std::map<std::string, int64_t>& m, const std::string& k) {
  auto it = m.find(k);
  return it == m.end() ? 0 : it->second;
}
}  // namespace

PRF span_prf(const SpanCounts& c) { return prf(c.correct_chunks, c.gold_chunks, c.pred_chunks); }

PRF span_prf(const SpanCounts& c, const std::string& type) {
  return prf(get(c.correct_by_type, type), get(c.gold_by_type, type), get(c.pred_by_type, type));
}

double tag_accuracy(const SpanCounts& c) {
  return c.tokens > 0 ? double(c.correct_tags) / double(c.tokens) : std::numeric_limits<double>::quiet_NaN();
}

// ---- AUC ----

double auc_roc(const std::vector<double>& score, const std::vector<int64_t>& label) {
  KILN_CHECK(score.size() == label.size(), "AUC: {} scores for {} labels", score.size(), label.size());
  std::vector<size_t> order(score.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] < score[b]; });
  // Mid-ranks: a run of tied scores shares the mean of its ranks, which counts each tied
  // (positive, negative) pair as one half.
  double rank_sum_pos = 0;
  int64_t pos = 0, neg = 0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && score[order[j]] == score[order[i]]) ++j;
    double mid = (double(i + 1) + double(j)) / 2.0;
    for (size_t k = i; k < j; ++k) {
      int64_t y = label[order[k]];
      KILN_CHECK(y == 0 || y == 1, "AUC: label {} is not 0 or 1", y);
      if (y == 1) {
        rank_sum_pos += mid;
        ++pos;
      } else {
        ++neg;
      }
    }
    i = j;
  }
  if (pos == 0 || neg == 0) return std::numeric_limits<double>::quiet_NaN();
  return (rank_sum_pos - double(pos) * double(pos + 1) / 2.0) / (double(pos) * double(neg));
}

}  // namespace kiln::train
