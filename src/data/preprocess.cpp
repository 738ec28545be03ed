#include "data/preprocess.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <unordered_map>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "data/align.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;

namespace kiln::data {
namespace {

bool is_integer(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (i >= s.size() || s.size() > 18) return false;
  for (; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

// Cuts ids (and the arrays parallel to them) to max_len as data.truncation says.
template <typename... V>
bool truncate(const Record& rec, const DataConfig& c, int32_t bos, std::vector<int32_t>& ids, V&... parallel) {
  size_t max_len = size_t(c.max_len);
  if (ids.size() <= max_len) return false;
  if (c.truncation == "error")
    input_error("{}: {} tokens, more than data.max_len = {} (data.truncation: error; set it to right or left to cut)",
                rec.where(), ids.size(), max_len);
  auto cut = [&](auto& v) {
    using T = typename std::decay_t<decltype(v)>::value_type;
    if (c.truncation == "right") {
      v.resize(max_len);
    } else {  // left: keep the BOS and the last max_len - 1 tokens
      bool keep_first = !ids.empty() && ids[0] == bos;
      std::vector<T> out;
      if (keep_first) out.push_back(v[0]);
      out.insert(out.end(), v.end() - int64_t(max_len - out.size()), v.end());
      v.swap(out);
    }
  };
  // The parallel arrays first: cutting ids first would change the BOS test for them.
  (cut(parallel), ...);
  cut(ids);
  return true;
}

template <typename T>
void put(std::ofstream& out, const std::vector<T>& v) {
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

void write_part(const std::string& path, const StoreData& d) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) input_error("{}: cannot write (is data.store_dir on a file system every rank sees?)", tmp);
    put(out, d.input_ids), put(out, d.offsets), put(out, d.labels), put(out, d.token_labels), put(out, d.word_ids);
    put(out, d.word_offsets), put(out, d.word_tags), put(out, d.loss_mask), put(out, d.source_line);
    put(out, std::vector<int64_t>{d.meta.truncated});
    if (!out.flush()) input_error("{}: write failed", tmp);
  }
  fs::rename(tmp, path);
}

StoreData read_part(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InternalError(fmt::format("{}: part file missing (does every rank see data.store_dir?)", path));
  StoreData d;
  get(in, d.input_ids, path), get(in, d.offsets, path), get(in, d.labels, path), get(in, d.token_labels, path);
  get(in, d.word_ids, path), get(in, d.word_offsets, path), get(in, d.word_tags, path), get(in, d.loss_mask, path);
  get(in, d.source_line, path);
  std::vector<int64_t> t;
  get(in, t, path);
  d.meta.truncated = t.at(0);
  return d;
}

void write_text(const std::string& path, const std::string& s) {
  std::ofstream out(path, std::ios::trunc);
  out << s;
}

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

std::string resolve_kind(const DataConfig& c) {
  if (c.kind != "auto") return c.kind;
  if (c.format == "conll") return "token_classification";
  if (c.format == "text" || c.format == "conversation") return "lm";
  return "classification";
}

std::vector<std::string> build_label_map(const std::string& kind, const std::vector<std::string>& declared,
                                         const std::vector<Record>& train, const std::vector<Record>& eval) {
  if (kind == "lm") return {};
  bool tags = kind == "token_classification";
  auto each_label = [&](const std::vector<Record>& recs, auto f) {
    for (auto& r : recs) {
      if (tags) {
        for (auto& t : r.tags) f(t, r);
      } else {
        f(r.label, r);
      }
    }
  };
  std::vector<std::string> names = declared;
  if (names.empty()) {
    std::set<std::string> seen;
    each_label(train, [&](const std::string& l, const Record&) { seen.insert(l); });
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
    each_label(recs, [&](const std::string& l, const Record& r) {
      if (!known.count(l) && !unknown.count(l)) unknown[l] = r.where();
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

StoreData encode_records(const std::string& kind, const std::vector<Record>& records, size_t begin, size_t end,
                         const std::vector<std::string>& label_names, const Tokenizer& tok, const DataConfig& c) {
  StoreData d;
  d.meta.kind = kind;
  std::unordered_map<std::string, int32_t> lid;
  for (size_t i = 0; i < label_names.size(); ++i) lid[label_names[i]] = int32_t(i);
  auto label_id = [&](const std::string& l) {
    auto it = lid.find(l);
    KILN_CHECK(it != lid.end(), "label `{}` missing from the label map", l);
    return it->second;
  };
  const int32_t bos = tok.bos_id(), eos = tok.eos_id();
  for (size_t i = begin; i < end; ++i) {
    const Record& rec = records[i];
    std::vector<int32_t> ids;
    if (kind == "classification") {
      ids = tok.encode(rec.text, true);
      if (!rec.text_pair.empty()) {
        auto p = tok.encode(rec.text_pair, false);
        ids.insert(ids.end(), p.begin(), p.end());
      }
      if (truncate(rec, c, bos, ids)) ++d.meta.truncated;
      d.labels.push_back(label_id(rec.label));
    } else if (kind == "token_classification") {
      ids = {bos};
      std::vector<int32_t> wid = {kNoWord}, wl;
      for (size_t w = 0; w < rec.words.size(); ++w) {
        // Word by word: sentencepiece's dummy prefix gives each word the `▁` it has after a space,
        // so the ids equal those of the space-joined sentence and the word boundaries are exact.
        auto p = tok.encode(rec.words[w], false);
        ids.insert(ids.end(), p.begin(), p.end());
        wid.insert(wid.end(), p.size(), int32_t(w));
        wl.push_back(label_id(rec.tags[w]));
      }
      // Labels before truncation: the surviving sub-tokens of a word cut on the left stay ignored.
      std::vector<int32_t> tl = align_word_labels(wid, wl);
      if (truncate(rec, c, bos, ids, wid, tl)) ++d.meta.truncated;
      d.token_labels.insert(d.token_labels.end(), tl.begin(), tl.end());
      d.word_ids.insert(d.word_ids.end(), wid.begin(), wid.end());
      d.word_tags.insert(d.word_tags.end(), wl.begin(), wl.end());
      d.word_offsets.push_back(int64_t(d.word_tags.size()));
    } else if (!rec.turns.empty()) {
      // FastChat `ie_as_qa`: "{system} USER: {q} ASSISTANT: {a}</s>USER: ..."; loss on "{a}</s>".
      ids = {bos};
      std::vector<uint8_t> mask = {0};
      for (size_t t = 0; t < rec.turns.size(); ++t) {
        std::vector<int32_t> p;
        bool answer = rec.turns[t].from == "gpt";
        if (answer) {
          p = tok.encode(rec.turns[t].value, false);
          p.push_back(eos);
        } else {
          std::string q = (t == 0 ? c.system_prompt + " " : std::string()) + "USER: " + rec.turns[t].value + " ASSISTANT:";
          p = tok.encode(q, false);
        }
        ids.insert(ids.end(), p.begin(), p.end());
        mask.insert(mask.end(), p.size(), answer ? 1 : 0);
      }
      if (truncate(rec, c, bos, ids, mask)) ++d.meta.truncated;
      d.loss_mask.insert(d.loss_mask.end(), mask.begin(), mask.end());
    } else {  // plain text for lm: one document, packed after the merge
      ids = tok.encode(rec.text, true, true);
      d.loss_mask.insert(d.loss_mask.end(), ids.size(), 1);
    }
    d.input_ids.insert(d.input_ids.end(), ids.begin(), ids.end());
    d.offsets.push_back(int64_t(d.input_ids.size()));
    d.source_line.push_back(rec.line);
  }
  return d;
}

StoreData pack_text(const StoreData& docs, int64_t max_len) {
  StoreData d;
  d.meta = docs.meta;
  d.input_ids = docs.input_ids;
  d.loss_mask = docs.loss_mask;
  int64_t T = int64_t(d.input_ids.size());
  for (int64_t b = max_len; b < T; b += max_len) d.offsets.push_back(b);
  if (T > 0) d.offsets.push_back(T);
  d.source_line.assign(size_t(d.size()), 0);
  return d;
}

std::vector<SplitSummary> preprocess(const Recipe& r, const Tokenizer& tok, const Parallel& par) {
  const DataConfig& c = r.data;
  const std::string kind = resolve_kind(c);
  const std::string& f = c.format;
  if (kind == "token_classification" && f != "conll")
    input_error("key `data.kind`: token_classification reads CoNLL files (data.format: conll), not `{}`", f);
  if (f == "conll" && kind != "token_classification")
    input_error("key `data.kind`: CoNLL files make a token_classification store, not `{}`", kind);
  if (kind == "classification" && (f == "text" || f == "conversation"))
    input_error("key `data.kind`: format `{}` has no labels to classify; use kind lm", f);
  if (c.train.empty()) input_error("key `data.train`: no training data file set");

  ReadOptions o = options_from(c);
  if (kind == "lm") o.label_field.clear();
  struct Split {
    std::string name, file;
    int64_t limit;
    std::vector<Record> records;
    ReadStats stats;
  };
  std::vector<Split> splits;
  splits.push_back({"train", c.train, c.max_train_examples, {}, {}});
  if (!c.eval.empty()) splits.push_back({"eval", c.eval, c.max_eval_examples, {}, {}});
  for (auto& s : splits) {
    s.records = read_records(f, s.file, o, &s.stats);
    if (s.limit > 0 && int64_t(s.records.size()) > s.limit) s.records.resize(size_t(s.limit));
    if (s.records.empty())
      input_error("{}: no {} records{} (data.{})", s.file, f,
                  s.stats.skipped ? fmt::format(" left, {} malformed ones skipped", s.stats.skipped) : "", s.name);
    if (s.stats.skipped && par.rank == 0)
      log::warn("{}: skipped {} malformed record{} (data.on_bad_record: skip); first: {}", s.file, s.stats.skipped,
                s.stats.skipped == 1 ? "" : "s", s.stats.first_skip);
  }
  std::vector<std::string> labels =
      build_label_map(kind, c.labels, splits[0].records, splits.size() > 1 ? splits[1].records : std::vector<Record>{});

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
      StoreData d = encode_records(kind, s.records, b, e, labels, tok, c);
      sum.tokenize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - tt).count();
      write_part(part, d);
    });
    par.barrier();
    rethrow_rank_errors(dir, par.size, "rank");

    if (par.rank == 0) {
      run_or_record(merge_err, [&] {
        StoreData all;
        all.meta.kind = kind;
        for (int k = 0; k < par.size; ++k) {
          StoreData p = read_part(fmt::format("{}/rank{}.bin", dir, k));
          all.append(p);
          all.meta.truncated += p.meta.truncated;
        }
        if (kind == "lm" && f != "conversation") all = pack_text(all, c.max_len);
        StoreMeta& m = all.meta;
        m.split = s.name;
        m.tokenizer_checksum = tok.checksum();
        m.bos_id = tok.bos_id(), m.eos_id = tok.eos_id(), m.pad_id = tok.pad_id();
        m.max_len = c.max_len;
        m.label_names = labels;
        m.sources = {{fs::absolute(s.file).string(), sha256_file(s.file), s.stats.records, s.stats.skipped}};
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
