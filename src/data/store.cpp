#include "data/store.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/h5.h"
#include "data/tokenizer.h"

namespace kiln::data {
namespace {

using json = nlohmann::json;
using h5::Handle;

DType dtype_from(const std::string& s, const std::string& where) {
  for (DType t : {DType::i32, DType::i64, DType::u8, DType::f32})
    if (s == dtype_name(t)) return t;
  input_error("{}: store metadata names an unknown field type `{}`", where, s);
}

Per per_from(const std::string& s, const std::string& where) {
  for (Per p : {Per::example, Per::token, Per::ragged})
    if (s == per_name(p)) return p;
  input_error("{}: store metadata names an unknown field shape `{}`", where, s);
}

void write_values(hid_t file, const std::string& name, const Values& v, const std::string& path) {
  std::visit([&](const auto& vec) { h5::write_vector(file, name, vec, path); }, v);
}

Values read_values(hid_t file, const Field& f, const std::string& path) {
  switch (f.dtype) {
    case DType::i32: return h5::read_vector<int32_t>(file, f.name, path);
    case DType::i64: return h5::read_vector<int64_t>(file, f.name, path);
    case DType::u8: return h5::read_vector<uint8_t>(file, f.name, path);
    case DType::f32: return h5::read_vector<float>(file, f.name, path);
  }
  return {};
}

}  // namespace

StoreData::StoreData(const std::vector<Field>& fields) {
  for (auto& f : fields) columns.push_back(Column{f, empty_values(f.dtype), {0}});
}

Column& StoreData::column(const std::string& name) {
  for (auto& c : columns)
    if (c.field.name == name) return c;
  throw InternalError(fmt::format("store has no field `{}` (kind {})", name, meta.kind));
}

const Column& StoreData::column(const std::string& name) const {
  return const_cast<StoreData*>(this)->column(name);
}

void StoreData::check(const Example& ex, const std::string& where) const {
  const size_t T = ex.ids.size();
  for (auto& c : columns) {
    auto it = ex.values.find(c.field.name);
    KILN_CHECK(it != ex.values.end(), "{}: encoder gave no value for field `{}`", where, c.field.name);
    KILN_CHECK(dtype_of(it->second) == c.field.dtype, "{}: field `{}`: values of type {}, declared {}", where,
               c.field.name, dtype_name(dtype_of(it->second)), dtype_name(c.field.dtype));
    size_t n = values_size(it->second);
    if (c.field.per == Per::example)
      KILN_CHECK(n == 1, "{}: example field `{}` has {} values", where, c.field.name, n);
    if (c.field.per == Per::token)
      KILN_CHECK(n == T, "{}: token field `{}` has {} values for {} tokens", where, c.field.name, n, T);
  }
}

void StoreData::add(const Example& ex, int64_t line) {
  for (auto& c : columns) {
    const Values& values = ex.values.at(c.field.name);
    std::visit(
        [&](auto& dst) {
          using V = std::decay_t<decltype(dst)>;
          const V& src = std::get<V>(values);
          dst.insert(dst.end(), src.begin(), src.end());
          if (c.field.per == Per::ragged) c.offsets.push_back(int64_t(dst.size()));
        },
        c.values);
  }
  input_ids.insert(input_ids.end(), ex.ids.begin(), ex.ids.end());
  offsets.push_back(int64_t(input_ids.size()));
  source_line.push_back(line);
}

void StoreData::append(const StoreData& p) {
  int64_t base = offsets.back();
  for (size_t i = 1; i < p.offsets.size(); ++i) offsets.push_back(base + p.offsets[i]);
  input_ids.insert(input_ids.end(), p.input_ids.begin(), p.input_ids.end());
  source_line.insert(source_line.end(), p.source_line.begin(), p.source_line.end());
  KILN_CHECK(columns.size() == p.columns.size(), "appending a store part with {} fields to one with {}",
             p.columns.size(), columns.size());
  for (size_t k = 0; k < columns.size(); ++k) {
    Column& c = columns[k];
    const Column& o = p.columns[k];
    KILN_CHECK(c.field.name == o.field.name, "store parts disagree on field {}", k);
    int64_t vbase = int64_t(values_size(c.values));
    std::visit(
        [&](auto& dst) {
          using V = std::decay_t<decltype(dst)>;
          const V& src = std::get<V>(o.values);
          dst.insert(dst.end(), src.begin(), src.end());
        },
        c.values);
    if (c.field.per == Per::ragged)
      for (size_t i = 1; i < o.offsets.size(); ++i) c.offsets.push_back(vbase + o.offsets[i]);
  }
}

std::string meta_to_json(const StoreMeta& m) {
  json j;
  j["format_version"] = m.format_version;
  j["kind"] = m.kind;
  j["split"] = m.split;
  j["tokenizer_checksum"] = m.tokenizer_checksum;
  j["bos_id"] = m.bos_id;
  j["eos_id"] = m.eos_id;
  j["pad_id"] = m.pad_id;
  j["max_len"] = m.max_len;
  j["truncation"] = m.truncation;
  j["truncated"] = m.truncated;
  j["encoded"] = m.encoded;
  j["label_names"] = m.label_names;
  j["sources"] = json::array();
  for (auto& s : m.sources)
    j["sources"].push_back({{"path", s.path}, {"sha256", s.sha256}, {"records", s.records}, {"skipped", s.skipped}});
  j["fields"] = json::array();
  for (auto& f : m.fields) {
    json e = {{"name", f.name}, {"dtype", dtype_name(f.dtype)}, {"per", per_name(f.per)}};
    if (f.per == Per::token) e["pad"] = f.pad;
    if (f.per == Per::ragged) e["offsets"] = f.offsets_name();
    j["fields"].push_back(e);
  }
  j["settings"] = m.settings;
  return j.dump(1);
}

StoreMeta meta_from_json(const std::string& s, const std::string& where) {
  StoreMeta m;
  try {
    json j = json::parse(s);
    m.format_version = j.at("format_version").get<int>();
    m.kind = j.at("kind").get<std::string>();
    m.split = j.at("split").get<std::string>();
    m.tokenizer_checksum = j.at("tokenizer_checksum").get<std::string>();
    m.bos_id = j.at("bos_id").get<int32_t>();
    m.eos_id = j.at("eos_id").get<int32_t>();
    m.pad_id = j.at("pad_id").get<int32_t>();
    m.max_len = j.at("max_len").get<int64_t>();
    m.truncation = j.value("truncation", std::string());
    m.truncated = j.at("truncated").get<int64_t>();
    m.encoded = j.value("encoded", int64_t(-1));
    m.label_names = j.at("label_names").get<std::vector<std::string>>();
    for (auto& e : j.at("sources"))
      m.sources.push_back({e.at("path").get<std::string>(), e.at("sha256").get<std::string>(),
                           e.at("records").get<int64_t>(), e.at("skipped").get<int64_t>()});
    if (m.format_version == 1 && !j.contains("fields"))
      input_error("{}: made by an older kiln, before methods declared their fields: run `kiln preprocess` again",
                  where);
    for (auto& e : j.at("fields")) {
      Field f;
      f.name = e.at("name").get<std::string>();
      f.dtype = dtype_from(e.at("dtype").get<std::string>(), where);
      f.per = per_from(e.at("per").get<std::string>(), where);
      f.pad = e.value("pad", 0.0);
      f.offsets = e.value("offsets", std::string());
      m.fields.push_back(f);
    }
    m.settings = j.value("settings", std::string());
  } catch (const json::exception& e) {
    input_error("{}: store metadata is damaged: {}", where, e.what());
  }
  if (m.format_version != 1)
    input_error("{}: store format version {} (this kiln reads 1): run `kiln preprocess` again", where, m.format_version);
  return m;
}

void write_store(const std::string& path, const StoreData& d) {
  Handle fcpl{H5Pcreate(H5P_FILE_CREATE), H5Pclose};
  H5Pset_obj_track_times(fcpl.id, 0);
  uint64_t bytes = d.input_ids.size() * sizeof(d.input_ids[0]) + d.offsets.size() * sizeof(d.offsets[0]) +
                   d.source_line.size() * sizeof(d.source_line[0]);
  for (auto& c : d.columns)
    bytes += std::visit([](const auto& v) { return v.size() * sizeof(v[0]); }, c.values) + c.offsets.size() * sizeof(c.offsets[0]);
  h5::write_atomic(path, bytes, fcpl.id, [&](hid_t file) {
    const std::string& tmp = path;
    h5::write_vector(file, "input_ids", d.input_ids, tmp);
    h5::write_vector(file, "offsets", d.offsets, tmp);
    StoreMeta meta = d.meta;
    meta.fields.clear();
    for (auto& c : d.columns) {
      write_values(file, c.field.name, c.values, tmp);
      if (c.field.per == Per::ragged) h5::write_vector(file, c.field.offsets_name(), c.offsets, tmp);
      meta.fields.push_back(c.field);
    }
    h5::write_vector(file, "source_line", d.source_line, tmp);
    h5::write_string_attr(file, "meta", meta_to_json(meta));
    h5::write_string_attr(file, "recipe", d.meta.recipe);
  });
}

Store::Store(const std::string& path) : path_(path) {
  if (!std::filesystem::exists(path)) input_error("{}: data store not found: run `kiln preprocess <recipe>` first", path);
  h5::quiet();
  if (H5Fis_hdf5(path.c_str()) <= 0) input_error("{}: not an HDF5 file (not a kiln data store)", path);
  Handle file{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) input_error("{}: cannot open the data store", path);
  std::string meta, recipe;
  if (!h5::read_string_attr(file.id, "meta", meta))
    input_error("{}: not a kiln data store (attribute `meta` missing)", path);
  if (!h5::read_string_attr(file.id, "recipe", recipe))
    input_error("{}: not a kiln data store (attribute `recipe` missing)", path);
  d_.meta = meta_from_json(meta, path);
  d_.meta.recipe = recipe;
  auto need = [&](const std::string& name) {
    if (!h5::exists(file.id, name)) input_error("{}: damaged data store: dataset `{}` missing", path, name);
  };
  need("input_ids"), need("offsets");
  d_.input_ids = h5::read_vector<int32_t>(file.id, "input_ids", path);
  d_.offsets = h5::read_vector<int64_t>(file.id, "offsets", path);
  if (h5::exists(file.id, "source_line")) d_.source_line = h5::read_vector<int64_t>(file.id, "source_line", path);
  if (d_.offsets.empty()) d_.offsets = {0};
  // Consistency: a truncated or foreign file must fail here, not as an out-of-range read later.
  const int64_t n = d_.size(), T = int64_t(d_.input_ids.size());
  auto bad = [&](const std::string& what) { input_error("{}: damaged data store: {}", path, what); };
  if (n < 0 || d_.offsets.back() != T) bad("offsets do not cover input_ids");
  for (size_t i = 1; i < d_.offsets.size(); ++i)
    if (d_.offsets[i] < d_.offsets[i - 1]) bad("offsets decrease");
  for (auto& f : d_.meta.fields) {
    need(f.name);
    Column c{f, read_values(file.id, f, path), {0}};
    int64_t size = int64_t(values_size(c.values));
    if (f.per == Per::example && size != n) bad(fmt::format("`{}` has {} values for {} examples", f.name, size, n));
    if (f.per == Per::token && size != T) bad(fmt::format("`{}` has {} values for {} tokens", f.name, size, T));
    if (f.per == Per::ragged) {
      need(f.offsets_name());
      c.offsets = h5::read_vector<int64_t>(file.id, f.offsets_name(), path);
      if (int64_t(c.offsets.size()) != n + 1 || c.offsets.back() != size)
        bad(fmt::format("`{}` and `{}` disagree", f.name, f.offsets_name()));
      for (size_t i = 1; i < c.offsets.size(); ++i)
        if (c.offsets[i] < c.offsets[i - 1]) bad(fmt::format("`{}` decreases", f.offsets_name()));
    }
    d_.columns.push_back(std::move(c));
  }
}

void Store::check_tokenizer(const Tokenizer& tok) const { check_tokenizer(tok.checksum(), tok.path()); }

void Store::check_tokenizer(const std::string& checksum, const std::string& tokenizer_path) const {
  if (checksum != d_.meta.tokenizer_checksum)
    input_error("{}: the store was made with another tokenizer (sha256 {}) than the model's {} (sha256 {}): run "
                "`kiln preprocess` again with this model",
                path_, d_.meta.tokenizer_checksum.substr(0, 12), tokenizer_path, checksum.substr(0, 12));
}

std::vector<int64_t> Store::lengths() const {
  std::vector<int64_t> l(static_cast<size_t>(size()));
  for (int64_t i = 0; i < size(); ++i) l[size_t(i)] = length(i);
  return l;
}

bool Store::has(const std::string& field) const {
  for (auto& c : d_.columns)
    if (c.field.name == field) return true;
  return false;
}

template <typename T>
View<T> Store::get(const std::string& name, int64_t i) const {
  const Column& c = d_.column(name);
  const auto* v = std::get_if<std::vector<T>>(&c.values);
  KILN_CHECK(v, "{}: field `{}` is {}, read as another type", path_, name, dtype_name(c.field.dtype));
  switch (c.field.per) {
    case Per::example: return {v->data() + i, 1};
    case Per::token: return {v->data() + d_.offsets[size_t(i)], length(i)};
    case Per::ragged: return {v->data() + c.offsets[size_t(i)], c.offsets[size_t(i) + 1] - c.offsets[size_t(i)]};
  }
  return {};
}

template View<int32_t> Store::get<int32_t>(const std::string&, int64_t) const;
template View<int64_t> Store::get<int64_t>(const std::string&, int64_t) const;
template View<uint8_t> Store::get<uint8_t>(const std::string&, int64_t) const;
template View<float> Store::get<float>(const std::string&, int64_t) const;

}  // namespace kiln::data
