#include "train/eval_records.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "parallel/communicator.h"

namespace kiln::train {

namespace {
template <typename M>
const typename M::mapped_type& column_of(const M& m, const std::string& name) {
  static const typename M::mapped_type empty;
  auto it = m.find(name);
  return it == m.end() ? empty : it->second;
}

template <typename M>
void append_columns(M& a, const M& b) {
  for (auto& [name, col] : b) {
    auto& dst = a[name];
    dst.insert(dst.end(), col.begin(), col.end());
  }
}

template <typename M>
void sort_columns(M& m, const std::vector<size_t>& perm) {
  for (auto& [name, v] : m) {
    KILN_CHECK(v.size() == perm.size(), "eval records: column `{}` has {} entries for {} examples", name, v.size(),
               perm.size());
    std::remove_reference_t<decltype(v)> out;
    out.reserve(v.size());
    for (size_t i : perm) out.push_back(std::move(v[i]));
    v = std::move(out);
  }
}
}  // namespace

const std::vector<int64_t>& EvalRecords::ints_of(const std::string& n) const { return column_of(ints, n); }
const std::vector<double>& EvalRecords::reals_of(const std::string& n) const { return column_of(reals, n); }
const std::vector<std::vector<int32_t>>& EvalRecords::seqs_of(const std::string& n) const { return column_of(seqs, n); }
const std::vector<std::string>& EvalRecords::texts_of(const std::string& n) const { return column_of(texts, n); }
const std::vector<std::vector<double>>& EvalRecords::vecs_of(const std::string& n) const { return column_of(vecs, n); }

void EvalRecords::append(const EvalRecords& o) {
  example.insert(example.end(), o.example.begin(), o.example.end());
  append_columns(ints, o.ints);
  append_columns(reals, o.reals);
  append_columns(seqs, o.seqs);
  append_columns(texts, o.texts);
  append_columns(vecs, o.vecs);
  loss_sum += o.loss_sum;
  loss_count += o.loss_count;
}

void EvalRecords::sort_by_example() {
  std::vector<size_t> perm(example.size());
  std::iota(perm.begin(), perm.end(), size_t(0));
  std::stable_sort(perm.begin(), perm.end(), [&](size_t a, size_t b) { return example[a] < example[b]; });
  sort_columns(ints, perm);
  sort_columns(reals, perm);
  sort_columns(seqs, perm);
  sort_columns(texts, perm);
  sort_columns(vecs, perm);
  std::vector<int64_t> ex;
  ex.reserve(example.size());
  for (size_t i : perm) ex.push_back(example[i]);
  example = std::move(ex);
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
  w.pod(uint64_t(ints.size()));
  for (auto& [n, v] : ints) w.str(n), w.vec(v);
  w.pod(uint64_t(reals.size()));
  for (auto& [n, v] : reals) w.str(n), w.vec(v);
  w.pod(uint64_t(seqs.size()));
  for (auto& [n, v] : seqs) {
    w.str(n);
    w.pod(uint64_t(v.size()));
    for (auto& s : v) w.vec(s);
  }
  w.pod(uint64_t(texts.size()));
  for (auto& [n, v] : texts) {
    w.str(n);
    w.pod(uint64_t(v.size()));
    for (auto& s : v) w.str(s);
  }
  w.pod(uint64_t(vecs.size()));
  for (auto& [n, v] : vecs) {
    w.str(n);
    w.pod(uint64_t(v.size()));
    for (auto& s : v) w.vec(s);
  }
  w.pod(loss_sum);
  w.pod(loss_count);
  return std::move(w.out);
}

EvalRecords EvalRecords::deserialize(const std::string& bytes) {
  Reader r{bytes};
  EvalRecords e;
  e.example = r.vec<int64_t>();
  for (size_t k = 0, n = size_t(r.pod<uint64_t>()); k < n; ++k) {
    std::string name = r.str();
    e.ints[name] = r.vec<int64_t>();
  }
  for (size_t k = 0, n = size_t(r.pod<uint64_t>()); k < n; ++k) {
    std::string name = r.str();
    e.reals[name] = r.vec<double>();
  }
  for (size_t k = 0, n = size_t(r.pod<uint64_t>()); k < n; ++k) {
    auto& col = e.seqs[r.str()];
    for (size_t i = 0, m = size_t(r.pod<uint64_t>()); i < m; ++i) col.push_back(r.vec<int32_t>());
  }
  for (size_t k = 0, n = size_t(r.pod<uint64_t>()); k < n; ++k) {
    auto& col = e.texts[r.str()];
    for (size_t i = 0, m = size_t(r.pod<uint64_t>()); i < m; ++i) col.push_back(r.str());
  }
  for (size_t k = 0, n = size_t(r.pod<uint64_t>()); k < n; ++k) {
    auto& col = e.vecs[r.str()];
    for (size_t i = 0, m = size_t(r.pod<uint64_t>()); i < m; ++i) col.push_back(r.vec<double>());
  }
  e.loss_sum = r.pod<double>();
  e.loss_count = r.pod<int64_t>();
  KILN_CHECK(r.pos == bytes.size(), "eval records: {} trailing bytes", bytes.size() - r.pos);
  return e;
}

EvalRecords gather_records(const EvalRecords& mine, parallel::Communicator& comm) {
  EvalRecords all;
  for (auto& p : parallel::all_gather_bytes(mine.serialize(), comm)) all.append(EvalRecords::deserialize(p));
  all.sort_by_example();
  return all;
}

}  // namespace kiln::train
