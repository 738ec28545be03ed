#include "train/eval_records.h"

#include <cstring>
#include <numeric>

#include "core/error.h"

namespace kiln::train {

void EvalRecords::append(const EvalRecords& o) {
  auto cat = [](auto& a, const auto& b) { a.insert(a.end(), b.begin(), b.end()); };
  cat(example, o.example);
  cat(pred, o.pred);
  cat(gold, o.gold);
  cat(score, o.score);
  cat(pred_seq, o.pred_seq);
  cat(gold_seq, o.gold_seq);
  cat(pred_text, o.pred_text);
  cat(gold_text, o.gold_text);
  loss_sum += o.loss_sum;
  loss_count += o.loss_count;
}

void EvalRecords::sort_by_example() {
  std::vector<size_t> perm(example.size());
  std::iota(perm.begin(), perm.end(), size_t(0));
  std::stable_sort(perm.begin(), perm.end(), [&](size_t a, size_t b) { return example[a] < example[b]; });
  auto apply = [&](auto& v, const char* what) {
    if (v.empty()) return;
    KILN_CHECK(v.size() == perm.size(), "eval records: {} has {} entries for {} examples", what, v.size(),
               perm.size());
    std::remove_reference_t<decltype(v)> out;
    out.reserve(v.size());
    for (size_t i : perm) out.push_back(std::move(v[i]));
    v = std::move(out);
  };
  apply(pred, "pred");
  apply(gold, "gold");
  apply(score, "score");
  apply(pred_seq, "pred_seq");
  apply(gold_seq, "gold_seq");
  apply(pred_text, "pred_text");
  apply(gold_text, "gold_text");
  apply(example, "example");
}

namespace {
// A flat little-endian encoding: the gather moves bytes, and both ends are the same binary.
struct Writer {
  std::string out;
  template <typename T>
  void pod(const T& v) { out.append(reinterpret_cast<const char*>(&v), sizeof(T)); }
  template <typename T>
  void vec(const std::vector<T>& v) {
    pod(uint64_t(v.size()));
    if (!v.empty()) out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  void str(const std::string& s) {
    pod(uint64_t(s.size()));
    out.append(s);
  }
};
struct Reader {
  const std::string& in;
  size_t pos = 0;
  void need(size_t n) { KILN_CHECK(pos + n <= in.size(), "eval records: truncated buffer ({} bytes)", in.size()); }
  template <typename T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, in.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  template <typename T>
  std::vector<T> vec() {
    auto n = size_t(pod<uint64_t>());
    need(n * sizeof(T));
    std::vector<T> v(n);
    if (n) std::memcpy(v.data(), in.data() + pos, n * sizeof(T));
    pos += n * sizeof(T);
    return v;
  }
  std::string str() {
    auto n = size_t(pod<uint64_t>());
    need(n);
    std::string s = in.substr(pos, n);
    pos += n;
    return s;
  }
};
}  // namespace

std::string EvalRecords::serialize() const {
  Writer w;
  w.vec(example);
  w.vec(pred);
  w.vec(gold);
  w.vec(score);
  for (auto* seqs : {&pred_seq, &gold_seq}) {
    w.pod(uint64_t(seqs->size()));
    for (auto& s : *seqs) w.vec(s);
  }
  for (auto* texts : {&pred_text, &gold_text}) {
    w.pod(uint64_t(texts->size()));
    for (auto& s : *texts) w.str(s);
  }
  w.pod(loss_sum);
  w.pod(loss_count);
  return std::move(w.out);
}

EvalRecords EvalRecords::deserialize(const std::string& bytes) {
  Reader r{bytes};
  EvalRecords e;
  e.example = r.vec<int64_t>();
  e.pred = r.vec<int64_t>();
  e.gold = r.vec<int64_t>();
  e.score = r.vec<double>();
  for (auto* seqs : {&e.pred_seq, &e.gold_seq}) {
    auto n = size_t(r.pod<uint64_t>());
    for (size_t i = 0; i < n; ++i) seqs->push_back(r.vec<int32_t>());
  }
  for (auto* texts : {&e.pred_text, &e.gold_text}) {
    auto n = size_t(r.pod<uint64_t>());
    for (size_t i = 0; i < n; ++i) texts->push_back(r.str());
  }
  e.loss_sum = r.pod<double>();
  e.loss_count = r.pod<int64_t>();
  KILN_CHECK(r.pos == bytes.size(), "eval records: {} trailing bytes", bytes.size() - r.pos);
  return e;
}

}  // namespace kiln::train
