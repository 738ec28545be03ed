#include "data/schema.h"

#include <algorithm>
#include <map>
#include <set>

#include "core/config.h"
#include "core/error.h"

namespace kiln::data {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::u8: return "uint8";
    case DType::f32: return "float32";
  }
  return "?";
}

const char* per_name(Per p) {
  switch (p) {
    case Per::example: return "example";
    case Per::token: return "token";
    case Per::ragged: return "ragged";
  }
  return "?";
}

Values empty_values(DType t) {
  switch (t) {
    case DType::i32: return std::vector<int32_t>{};
    case DType::i64: return std::vector<int64_t>{};
    case DType::u8: return std::vector<uint8_t>{};
    case DType::f32: return std::vector<float>{};
  }
  return {};
}

DType dtype_of(const Values& v) {
  static const DType by_index[] = {DType::i32, DType::i64, DType::u8, DType::f32};
  return by_index[v.index()];
}

size_t values_size(const Values& v) {
  return std::visit([](const auto& vec) { return vec.size(); }, v);
}

int32_t EncodeContext::label_id(const std::string& label) const {
  auto it = std::find(label_names.begin(), label_names.end(), label);
  KILN_CHECK(it != label_names.end(), "label `{}` missing from the label map", label);
  return int32_t(it - label_names.begin());
}

std::vector<std::string> Encoder::sources(const DataConfig& c, const std::string& split) const {
  const std::string& f = split == "train" ? c.train : c.eval;
  if (f.empty()) return {};
  return {f};
}

std::vector<Record> Encoder::read(const DataConfig& c, const std::string&, const std::string& path,
                                  ReadStats* stats) const {
  return read_records(c.format, path, options_from(c), stats);
}

namespace {
bool is_integer(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (i >= s.size() || s.size() > 18) return false;
  for (; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}
}  // namespace

std::vector<std::string> build_label_map(bool tags, const std::vector<std::string>& declared,
                                         const std::vector<Record>& train, const std::vector<Record>& eval) {
  // f(label, where): a tag's own line (CoNLL: one word a line from the record's first), else the
  // record's.
  auto each_label = [&](const std::vector<Record>& recs, auto f) {
    for (auto& r : recs) {
      if (tags) {
        for (size_t i = 0; i < r.tags.size(); ++i) f(r.tags[i], [&r, i] { return r.file + ":" + std::to_string(r.line + int64_t(i)); });
      } else {
        f(r.label, [&r] { return r.where(); });
      }
    }
  };
  std::vector<std::string> names = declared;
  if (names.empty()) {
    std::set<std::string> seen;
    each_label(train, [&](const std::string& l, auto) { seen.insert(l); });
    names.assign(seen.begin(), seen.end());
    if (tags) {
      // O first, then by entity type with B- before I-: readable confusion matrices, stable ids.
      std::stable_sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
        if (a == "O" || b == "O") return a == "O" && b != "O";
        std::string ta = a.substr(std::min<size_t>(2, a.size())), tb = b.substr(std::min<size_t>(2, b.size()));
        return ta != tb ? ta < tb : a < b;
      });
    } else if (std::all_of(names.begin(), names.end(), is_integer)) {
      std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
        return std::stoll(a) < std::stoll(b);
      });
    }
  }
  std::set<std::string> known(names.begin(), names.end());
  std::map<std::string, std::string> unknown;  // label -> first place seen
  auto check = [&](const std::vector<Record>& recs) {
    each_label(recs, [&](const std::string& l, auto where) {
      if (!known.count(l) && !unknown.count(l)) unknown[l] = where();
    });
  };
  if (!declared.empty()) check(train);
  check(eval);
  if (!unknown.empty()) {
    std::string list, set;
    int shown = 0;
    for (auto& [l, w] : unknown)
      if (shown++ < 10) list += fmt::format("{}`{}` ({})", list.empty() ? "" : ", ", shorten(l, 40), w);
    if (unknown.size() > 10) list += fmt::format(" and {} more", unknown.size() - 10);
    for (auto& n : names) set += (set.empty() ? "" : ", ") + n;
    input_error("{} label{} outside the {} set [{}]: {}", unknown.size(), unknown.size() == 1 ? "" : "s",
                declared.empty() ? "train split's" : "declared (data.labels)", shorten(set, 200), list);
  }
  return names;
}

}  // namespace kiln::data
