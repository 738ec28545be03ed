#include "train/stores.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "data/preprocess.h"
#include "data/tokenizer.h"
#include "parallel/communicator.h"

namespace kiln::train {

namespace fs = std::filesystem;

namespace {

// Why the store at `path` does not hold what the recipe asks for now ("" when it does).
std::string stale_reason(const Recipe& r, const data::Encoder& enc, const data::Tokenizer& tok, const std::string& path,
                         const std::vector<std::string>& srcs, int64_t limit) {
  if (!fs::exists(path)) return "missing";
  try {
    data::Store s(path);
    const auto& m = s.meta();
    if (m.kind != enc.kind()) return "made for kind " + m.kind;
    if (m.settings != enc.settings()) return "made with other " + m.kind + " settings";
    if (m.tokenizer_checksum != tok.checksum()) return "made with another tokenizer";
    if (m.max_len != r.data.max_len) return fmt::format("made with max_len {}", m.max_len);
    if (m.sources.size() != srcs.size()) return "made from other files";
    int64_t records = 0;
    for (size_t i = 0; i < srcs.size(); ++i) {
      if (m.sources[i].path != fs::absolute(srcs[i]).string()) return "made from another file";
      if (m.sources[i].sha256 != sha256_file(srcs[i])) return srcs[i] + " changed since";
      records += m.sources[i].records;
    }
    int64_t want = limit > 0 ? std::min(limit, records) : records;
    // Packed stores (lm's text) hold windows, not records: compare what was encoded.
    const int64_t have = m.encoded >= 0 ? m.encoded : s.size();
    if (have != want) return fmt::format("holds {} examples, the recipe asks for {}", have, want);
    if (!m.truncation.empty() && m.truncation != r.data.truncation)
      return fmt::format("made with data.truncation {}", m.truncation);
    if (!r.data.labels.empty() && r.data.labels != s.label_names()) return "made with another label set";
  } catch (const Error& e) {
    return std::string("unreadable: ") + e.what();
  }
  return "";
}

}  // namespace

namespace {

// Why the train or eval store in `dir` does not hold what the recipe asks for ("" when both do).
std::string stores_stale(const Recipe& r, const data::Encoder& enc, const data::Tokenizer& tok, const std::string& dir) {
  const std::vector<std::string> train_files = enc.sources(r.data, "train"), eval_files = enc.sources(r.data, "eval");
  std::string why = stale_reason(r, enc, tok, (fs::path(dir) / "train.h5").string(), train_files, r.data.max_train_examples);
  if (why.empty() && !eval_files.empty()) {
    why = stale_reason(r, enc, tok, (fs::path(dir) / "eval.h5").string(), eval_files, r.data.max_eval_examples);
    if (!why.empty()) why = "eval store " + why;
  }
  return why;
}

// Where a read-only command (kiln eval, export) makes the stores the run directory lacks: a cache
// keyed by everything stale_reason compares, under $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln,
// else ~/.cache/kiln (a home directory is usually seen by every node of a cluster; /tmp is not).
std::string cache_store_dir(const Recipe& r, const data::Encoder& enc, const data::Tokenizer& tok) {
  std::string key = enc.kind() + "\n" + enc.settings() + "\n" + tok.checksum() + "\n" +
                    fmt::format("{}\n{}\n{}\n{}\n", r.data.max_len, r.data.max_train_examples,
                                r.data.max_eval_examples, r.data.truncation);
  for (const char* split : {"train", "eval"})
    for (auto& f : enc.sources(r.data, split)) key += std::string(split) + ":" + fs::absolute(f).string() + "\n";
  for (auto& l : r.data.labels) key += l + "\n";
  fs::path root;
  if (const char* c = std::getenv("KILN_CACHE_DIR"); c && *c)
    root = c;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    root = fs::path(x) / "kiln";
  else
    root = fs::path(std::getenv("HOME") ? std::getenv("HOME") : "/tmp") / ".cache" / "kiln";
  return (root / "stores" / sha256_hex(key.data(), key.size()).substr(0, 16)).string();
}

}  // namespace

Stores Stores::open(const Recipe& recipe, const data::Encoder& enc, const data::Tokenizer& tok,
                    parallel::Communicator& comm) {
  Recipe r = recipe;
  // Every decision is all-reduced, so that all ranks use one folder and none enters
  // preprocessing's barriers alone.
  auto anyone = [&comm](bool mine, const char* what) {
    at::Tensor t = at::full({1}, mine ? 1 : 0, at::TensorOptions().dtype(at::kLong));
    comm.all_reduce(t, parallel::ReduceOp::Sum, what);
    return t.item<int64_t>() > 0;
  };
  std::string why = stores_stale(r, enc, tok, r.data.store_dir);
  if (r.read_only && anyone(!why.empty(), "store staleness")) {
    // A run's stores are the run's own: an evaluation on other data (or of a run whose stores were
    // removed) tokenizes into the cache, never into the run directory.
    r.data.store_dir = cache_store_dir(r, enc, tok);
    log::info("the stores in {} are not those of this command ({}): using {}", recipe.data.store_dir,
              why.empty() ? "stale on another rank" : why, r.data.store_dir);
    why = stores_stale(r, enc, tok, r.data.store_dir);
  }
  const bool rebuild = anyone(!why.empty(), "store staleness");
  const std::vector<std::string> train_files = enc.sources(r.data, "train"), eval_files = enc.sources(r.data, "eval");
  if (rebuild) {
    log::info("tokenizing {} into {} ({})", fmt::join(train_files, ", "), r.data.store_dir, why.empty() ? "stale on another rank" : why);
    data::Parallel par;
    par.rank = comm.rank();
    par.size = comm.size();
    // Rank 0 merges the parts while the others wait: a large corpus may take longer than a training
    // step's collective timeout.
    par.barrier = [&comm] { comm.barrier("preprocess", comm.slow_work_timeout_s()); };
    data::preprocess(r, enc, tok, par);
  }
  Stores st;
  st.train_path_ = (fs::path(r.data.store_dir) / "train.h5").string();
  st.eval_path_ = (fs::path(r.data.store_dir) / "eval.h5").string();
  st.train_ = data::Store(st.train_path_);
  st.train_.check_tokenizer(tok);
  st.train_opts_ = data::collate_options(r.data, st.train_);
  st.has_eval_ = !eval_files.empty() && fs::exists(st.eval_path_);
  if (st.has_eval_) {
    st.eval_ = data::Store(st.eval_path_);
    st.eval_.check_tokenizer(tok);
    st.eval_opts_ = data::collate_options(r.data, st.eval_);
  }
  return st;
}

data::Batch Stores::collate(Split s, const std::vector<int64_t>& indices) const {
  return data::collate(of(s), indices, s == Split::train ? train_opts_ : eval_opts_);
}

void StoreTask::open_stores(const Recipe& r, const data::Tokenizer& tok, parallel::Communicator& comm) {
  std::unique_ptr<data::Encoder> enc = encoder(r);
  KILN_CHECK(enc, "method `{}` derives from StoreTask but has no encoder", r.method);
  stores_ = Stores::open(r, *enc, tok, comm);
}

data::Batch StoreTask::collate(Split s, const std::vector<int64_t>& indices) {
  data::Batch b = stores_.collate(s, indices);
  prepare(s, b);
  b.to(device_);
  return b;
}

}  // namespace kiln::train
