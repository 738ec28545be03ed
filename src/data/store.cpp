#include "data/store.h"

#include <hdf5.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/tokenizer.h"

namespace kiln::data {
namespace {

using json = nlohmann::json;

template <typename T>
hid_t h5type();
template <>
hid_t h5type<int32_t>() { return H5T_NATIVE_INT32; }
template <>
hid_t h5type<int64_t>() { return H5T_NATIVE_INT64; }
template <>
hid_t h5type<uint8_t>() { return H5T_NATIVE_UINT8; }

struct Handle {  // closes an HDF5 id with the matching call
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0) close(id);
  }
};

template <typename T>
void write_array(hid_t file, const char* name, const std::vector<T>& v, const std::string& path) {
  if (v.empty()) return;
  hsize_t dims[1] = {v.size()};
  Handle space{H5Screate_simple(1, dims, nullptr), H5Sclose};
  Handle dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  H5Pset_obj_track_times(dcpl.id, 0);  // no timestamps: same input, same bytes
  Handle ds{H5Dcreate2(file, name, h5type<T>(), space.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT), H5Dclose};
  if (ds.id < 0 || H5Dwrite(ds.id, h5type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    throw InternalError(fmt::format("{}: cannot write dataset {}", path, name));
}

template <typename T>
std::vector<T> read_array(hid_t file, const char* name, const std::string& path) {
  std::vector<T> v;
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return v;
  Handle ds{H5Dopen2(file, name, H5P_DEFAULT), H5Dclose};
  Handle space{H5Dget_space(ds.id), H5Sclose};
  hsize_t n = 0;
  if (ds.id < 0 || H5Sget_simple_extent_ndims(space.id) != 1) input_error("{}: dataset {} is not a 1-D array", path, name);
  H5Sget_simple_extent_dims(space.id, &n, nullptr);
  v.resize(size_t(n));
  if (n && H5Dread(ds.id, h5type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    input_error("{}: cannot read dataset {}", path, name);
  return v;
}

void write_string_attr(hid_t obj, const char* name, const std::string& s) {
  Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, std::max<size_t>(s.size(), 1));
  H5Tset_strpad(type.id, H5T_STR_NULLPAD);
  Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  Handle attr{H5Acreate2(obj, name, type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  std::string padded = s.empty() ? std::string(1, '\0') : s;
  if (attr.id < 0 || H5Awrite(attr.id, type.id, padded.data()) < 0)
    throw InternalError(fmt::format("cannot write attribute {}", name));
}

std::string read_string_attr(hid_t obj, const char* name, const std::string& path) {
  if (H5Aexists(obj, name) <= 0) input_error("{}: not a kiln data store (attribute `{}` missing)", path, name);
  Handle attr{H5Aopen(obj, name, H5P_DEFAULT), H5Aclose};
  Handle type{H5Aget_type(attr.id), H5Tclose};
  size_t n = H5Tget_size(type.id);
  std::string s(n, '\0');
  Handle mem{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(mem.id, n);
  H5Tset_strpad(mem.id, H5T_STR_NULLPAD);
  if (H5Aread(attr.id, mem.id, s.data()) < 0) input_error("{}: cannot read attribute {}", path, name);
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

template <typename T>
void append_vec(std::vector<T>& a, const std::vector<T>& b) {
  a.insert(a.end(), b.begin(), b.end());
}

}  // namespace

void StoreData::append(const StoreData& p) {
  int64_t base = offsets.back(), wbase = word_offsets.back();
  for (size_t i = 1; i < p.offsets.size(); ++i) offsets.push_back(base + p.offsets[i]);
  if (p.word_offsets.size() > 1)
    for (size_t i = 1; i < p.word_offsets.size(); ++i) word_offsets.push_back(wbase + p.word_offsets[i]);
  append_vec(input_ids, p.input_ids);
  append_vec(labels, p.labels);
  append_vec(token_labels, p.token_labels);
  append_vec(word_ids, p.word_ids);
  append_vec(word_tags, p.word_tags);
  append_vec(loss_mask, p.loss_mask);
  append_vec(source_line, p.source_line);
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
  j["truncated"] = m.truncated;
  j["label_names"] = m.label_names;
  j["sources"] = json::array();
  for (auto& s : m.sources)
    j["sources"].push_back({{"path", s.path}, {"sha256", s.sha256}, {"records", s.records}, {"skipped", s.skipped}});
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
    m.truncated = j.at("truncated").get<int64_t>();
    m.label_names = j.at("label_names").get<std::vector<std::string>>();
    for (auto& e : j.at("sources"))
      m.sources.push_back({e.at("path").get<std::string>(), e.at("sha256").get<std::string>(),
                           e.at("records").get<int64_t>(), e.at("skipped").get<int64_t>()});
  } catch (const json::exception& e) {
    input_error("{}: store metadata is damaged: {}", where, e.what());
  }
  if (m.format_version != 1)
    input_error("{}: store format version {} (this kiln reads 1): run `kiln preprocess` again", where, m.format_version);
  return m;
}

void write_store(const std::string& path, const StoreData& d) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::string tmp = path + ".tmp";
  std::remove(tmp.c_str());
  {
    Handle fcpl{H5Pcreate(H5P_FILE_CREATE), H5Pclose};
    H5Pset_obj_track_times(fcpl.id, 0);
    Handle file{H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl.id, H5P_DEFAULT), H5Fclose};
    if (file.id < 0) input_error("{}: cannot create the store file", tmp);
    write_array(file.id, "input_ids", d.input_ids, tmp);
    write_array(file.id, "offsets", d.offsets, tmp);
    write_array(file.id, "labels", d.labels, tmp);
    write_array(file.id, "token_labels", d.token_labels, tmp);
    write_array(file.id, "word_ids", d.word_ids, tmp);
    if (!d.word_tags.empty()) write_array(file.id, "word_offsets", d.word_offsets, tmp);
    write_array(file.id, "word_tags", d.word_tags, tmp);
    write_array(file.id, "loss_mask", d.loss_mask, tmp);
    write_array(file.id, "source_line", d.source_line, tmp);
    write_string_attr(file.id, "meta", meta_to_json(d.meta));
    write_string_attr(file.id, "recipe", d.meta.recipe);
    if (H5Fflush(file.id, H5F_SCOPE_GLOBAL) < 0) throw InternalError(fmt::format("{}: flush failed", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw InternalError(fmt::format("cannot rename {} to {}: {}", tmp, path, ec.message()));
}

Store::Store(const std::string& path) : path_(path) {
  if (!std::filesystem::exists(path)) input_error("{}: data store not found: run `kiln preprocess <recipe>` first", path);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // our messages, not HDF5's error stack
  if (H5Fis_hdf5(path.c_str()) <= 0) input_error("{}: not an HDF5 file (not a kiln data store)", path);
  Handle file{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) input_error("{}: cannot open the data store", path);
  d_.meta = meta_from_json(read_string_attr(file.id, "meta", path), path);
  d_.meta.recipe = read_string_attr(file.id, "recipe", path);
  d_.input_ids = read_array<int32_t>(file.id, "input_ids", path);
  d_.offsets = read_array<int64_t>(file.id, "offsets", path);
  d_.labels = read_array<int32_t>(file.id, "labels", path);
  d_.token_labels = read_array<int32_t>(file.id, "token_labels", path);
  d_.word_ids = read_array<int32_t>(file.id, "word_ids", path);
  d_.word_offsets = read_array<int64_t>(file.id, "word_offsets", path);
  d_.word_tags = read_array<int32_t>(file.id, "word_tags", path);
  d_.loss_mask = read_array<uint8_t>(file.id, "loss_mask", path);
  d_.source_line = read_array<int64_t>(file.id, "source_line", path);
  if (d_.word_offsets.empty()) d_.word_offsets = {0};
  // Consistency: a truncated or foreign file must fail here, not as an out-of-range read later.
  int64_t n = d_.size(), T = int64_t(d_.input_ids.size());
  auto bad = [&](const char* what) { input_error("{}: damaged data store: {}", path, what); };
  if (n < 0 || d_.offsets.back() != T) bad("offsets do not cover input_ids");
  for (size_t i = 1; i < d_.offsets.size(); ++i)
    if (d_.offsets[i] < d_.offsets[i - 1]) bad("offsets decrease");
  const std::string& k = d_.meta.kind;
  if (k == "classification" && int64_t(d_.labels.size()) != n) bad("labels and offsets disagree");
  if (k == "token_classification" &&
      (int64_t(d_.token_labels.size()) != T || int64_t(d_.word_ids.size()) != T ||
       int64_t(d_.word_offsets.size()) != n + 1 || d_.word_offsets.back() != int64_t(d_.word_tags.size())))
    bad("token_classification arrays disagree");
  if (k == "lm" && int64_t(d_.loss_mask.size()) != T) bad("loss_mask and input_ids disagree");
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

View<int32_t> Store::word_tags(int64_t i) const {
  if (d_.word_tags.empty()) return {};
  auto b = d_.word_offsets[size_t(i)];
  return {d_.word_tags.data() + b, d_.word_offsets[size_t(i) + 1] - b};
}

}  // namespace kiln::data
