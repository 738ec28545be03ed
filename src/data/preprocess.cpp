#include "data/preprocess.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/config.h"
#include "core/error.h"
#include "core/files.h"
#include "core/hash.h"
#include "core/log.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;

namespace kiln::data {
namespace {

// Cuts an example's ids and token fields to max_len as data.truncation says.
bool truncate(const Record& rec, const DataConfig& c, int32_t bos, const std::vector<Field>& fields, Example& ex) {
  std::vector<int32_t>& ids = ex.ids;
  size_t max_len = size_t(c.max_len);
  if (ids.size() <= max_len) return false;
  if (c.truncation == "error")
    input_error("{}: {} tokens, more than data.max_len = {} (data.truncation: error; set it to right or left to cut)",
                rec.where(), ids.size(), max_len);
  const bool keep_first = c.truncation == "left" && ids[0] == bos;
  auto cut = [&](auto& v) {
    using T = typename std::decay_t<decltype(v)>::value_type;
    if (c.truncation == "right") {
      v.resize(max_len);
    } else {  // left: keep the BOS and the last max_len - 1 tokens
      std::vector<T> out;
      if (keep_first) out.push_back(v[0]);
      out.insert(out.end(), v.end() - int64_t(max_len - out.size()), v.end());
      v.swap(out);
    }
  };
  for (auto& f : fields)
    if (f.per == Per::token) std::visit(cut, ex.values.at(f.name));
  cut(ids);
  return true;
}

template <typename T>
void put(std::ostream& out, const std::vector<T>& v) {
  uint64_t n = v.size();
  out.write(reinterpret_cast<const char*>(&n), sizeof n);
  out.write(reinterpret_cast<const char*>(v.data()), std::streamsize(n * sizeof(T)));
}

template <typename T>
void get(std::ifstream& in, std::vector<T>& v, const std::string& path) {
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), sizeof n);
  if (!in || n > (uint64_t(1) << 40)) throw InternalError(fmt::format("{}: damaged part file", path));
  v.resize(size_t(n));
  in.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * sizeof(T)));
  if (!in) throw InternalError(fmt::format("{}: damaged part file", path));
}

void put_values(std::ostream& out, const Values& v) {
  std::visit([&](const auto& vec) { put(out, vec); }, v);
}

void get_values(std::ifstream& in, Values& v, const std::string& path) {
  std::visit([&](auto& vec) { get(in, vec, path); }, v);
}

void write_part(const std::string& path, const StoreData& d) {
  std::ostringstream out(std::ios::binary);
  put(out, d.input_ids), put(out, d.offsets), put(out, d.source_line);
  for (auto& c : d.columns) put_values(out, c.values), put(out, c.offsets);
  put(out, std::vector<int64_t>{d.meta.truncated});
  write_file_atomic(path, out.str());
}

StoreData read_part(const std::string& path, const std::vector<Field>& fields) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InternalError(fmt::format("{}: part file missing (does every rank see data.store_dir?)", path));
  StoreData d(fields);
  get(in, d.input_ids, path), get(in, d.offsets, path), get(in, d.source_line, path);
  for (auto& c : d.columns) get_values(in, c.values, path), get(in, c.offsets, path);
  std::vector<int64_t> t;
  get(in, t, path);
  d.meta.truncated = t.at(0);
  return d;
}

void write_text(const std::string& path, const std::string& s) { write_file_atomic(path, s); }

std::string read_text_file(const std::string& path) {
  std::ifstream in(path);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s;
}

// After a barrier: the first error any rank left (rank order), rethrown on every rank.
void rethrow_rank_errors(const std::string& dir, int size, const std::string& stem) {
  for (int k = 0; k < size; ++k) {
    std::string p = fmt::format("{}/{}{}.err", dir, stem, k);
    if (!fs::exists(p)) continue;
    std::string msg = read_text_file(p);
    bool input = msg.rfind("I", 0) == 0;
    msg = msg.substr(1);
    if (input) throw InputError(msg);
    throw InternalError(fmt::format("rank {}: {}", k, msg));
  }
}

template <typename F>
void run_or_record(const std::string& err_path, F f) {
  try {
    f();
  } catch (const InputError& e) {
    write_text(err_path, std::string("I") + e.what());
  } catch (const std::exception& e) {
    write_text(err_path, std::string("E") + e.what());
  }
}

}  // namespace

StoreData encode_records(const Encoder& enc, const std::vector<Record>& records, size_t begin, size_t end,
                         const std::vector<std::string>& label_names, const Tokenizer& tok, const DataConfig& c) {
  const std::vector<Field> fields = enc.fields();
  StoreData d(fields);
  d.meta.kind = enc.kind();
  EncodeContext ctx{tok, c, label_names};
  const bool cut = enc.truncates();
  for (size_t i = begin; i < end; ++i) {
    const Record& rec = records[i];
    Example ex;
    enc.encode(rec, ctx, ex);
    // Before truncation, which would hide a token field of the wrong length.
    d.check(ex, rec.where());
    if (cut && truncate(rec, c, tok.bos_id(), fields, ex)) ++d.meta.truncated;
    d.add(ex, rec.line);
  }
  return d;
}

void pack_documents(StoreData& d, int64_t max_len) {
  for (auto& col : d.columns)
    KILN_CHECK(col.field.per == Per::token, "pack_documents: field `{}` is not per token", col.field.name);
  const int64_t T = int64_t(d.input_ids.size());
  d.offsets = {0};
  for (int64_t b = max_len; b < T; b += max_len) d.offsets.push_back(b);
  if (T > 0) d.offsets.push_back(T);
  d.source_line.assign(size_t(d.size()), 0);
}

std::vector<SplitSummary> preprocess(const Recipe& r, const Encoder& enc, const Tokenizer& tok, const Parallel& par) {
  const DataConfig& c = r.data;
  const std::string& f = c.format;
  enc.check(c);
  const std::vector<Field> fields = enc.fields();
  struct Split {
    std::string name;
    std::vector<std::string> files;
    int64_t limit;
    std::vector<Record> records;
    ReadStats stats;
    std::vector<SourceInfo> sources;
  };
  std::vector<Split> splits;
  splits.push_back({"train", enc.sources(c, "train"), c.max_train_examples, {}, {}, {}});
  if (splits[0].files.empty()) input_error("key `data.train`: no training data file set");
  if (auto ev = enc.sources(c, "eval"); !ev.empty()) splits.push_back({"eval", ev, c.max_eval_examples, {}, {}, {}});
  for (auto& s : splits) {
    for (const std::string& file : s.files) {
      ReadStats st;
      std::vector<Record> recs = enc.read(c, s.name, file, &st);
      if (int64_t n = check_utf8(recs, c.invalid_utf8 == "replace"); n > 0 && par.rank == 0)
        log::warn("{}: {} text{} with invalid UTF-8 bytes replaced by U+FFFD (data.invalid_utf8: replace)", file, n,
                  n == 1 ? "" : "s");
      if (recs.empty())
        input_error("{}: no {} records{} (data.{})", file, f,
                    st.skipped ? fmt::format(" left, {} malformed ones skipped", st.skipped) : "", s.name);
      if (st.skipped && par.rank == 0)
        log::warn("{}: skipped {} malformed record{} (data.on_bad_record: skip); first: {}", file, st.skipped,
                  st.skipped == 1 ? "" : "s", st.first_skip);
      s.sources.push_back({fs::absolute(file).string(), sha256_file(file), st.records, st.skipped});
      s.stats.records += st.records;
      s.stats.skipped += st.skipped;
      s.records.insert(s.records.end(), std::make_move_iterator(recs.begin()), std::make_move_iterator(recs.end()));
    }
    if (s.limit > 0 && int64_t(s.records.size()) > s.limit) s.records.resize(size_t(s.limit));
  }
  std::vector<std::string> labels =
      enc.labels(c, splits[0].records, splits.size() > 1 ? splits[1].records : std::vector<Record>{});

  std::vector<SplitSummary> out;
  for (auto& s : splits) {
    auto ts = std::chrono::steady_clock::now();
    SplitSummary sum;
    sum.split = s.name;
    sum.path = (fs::path(c.store_dir) / (s.name + ".h5")).string();
    sum.source_records = s.stats.records;
    sum.skipped = s.stats.skipped;
    std::string dir = (fs::path(c.store_dir) / (".parts-" + s.name)).string();
    fs::create_directories(dir);
    std::string part = fmt::format("{}/rank{}.bin", dir, par.rank), err = fmt::format("{}/rank{}.err", dir, par.rank);
    std::string merge_err = dir + "/merge0.err";
    fs::remove(part), fs::remove(err);
    if (par.rank == 0) fs::remove(merge_err);

    size_t n = s.records.size();
    size_t b = n * size_t(par.rank) / size_t(par.size), e = n * size_t(par.rank + 1) / size_t(par.size);
    run_or_record(err, [&] {
      auto tt = std::chrono::steady_clock::now();
      StoreData d = encode_records(enc, s.records, b, e, labels, tok, c);
      sum.tokenize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - tt).count();
      write_part(part, d);
    });
    par.barrier();
    rethrow_rank_errors(dir, par.size, "rank");

    if (par.rank == 0) {
      run_or_record(merge_err, [&] {
        StoreData all(fields);
        for (int k = 0; k < par.size; ++k) {
          StoreData p = read_part(fmt::format("{}/rank{}.bin", dir, k), fields);
          all.append(p);
          all.meta.truncated += p.meta.truncated;
        }
        all.meta.encoded = all.size();
        enc.finish(all, c);
        StoreMeta& m = all.meta;
        m.kind = enc.kind();
        m.settings = enc.settings();
        m.split = s.name;
        m.tokenizer_checksum = tok.checksum();
        m.bos_id = tok.bos_id(), m.eos_id = tok.eos_id(), m.pad_id = tok.pad_id();
        m.max_len = c.max_len;
        m.truncation = c.truncation;
        m.label_names = labels;
        m.sources = s.sources;
        m.recipe = recipe::to_yaml(r.tree);
        write_store(sum.path, all);
        sum.examples = all.size();
        sum.tokens = int64_t(all.input_ids.size());
        sum.truncated = m.truncated;
        for (int k = 0; k < par.size; ++k) fs::remove(fmt::format("{}/rank{}.bin", dir, k));
      });
    }
    par.barrier();
    rethrow_rank_errors(dir, 1, "merge");
    if (par.rank == 0) fs::remove_all(dir);
    par.barrier();  // a following preprocess of this split must not write into the dir being removed
    sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    out.push_back(sum);
  }
  return out;
}

}  // namespace kiln::data
