#include "methods/stores.h"

#include <mpi.h>

#include <fmt/format.h>

#include <filesystem>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "data/preprocess.h"
#include "data/tokenizer.h"
#include "dist/world.h"

namespace kiln::methods {

namespace fs = std::filesystem;

namespace {

// Why the store at `path` does not hold what the recipe asks for now ("" when it does).
std::string stale_reason(const Recipe& r, const data::Tokenizer& tok, const std::string& path, const std::string& src,
                         int64_t limit) {
  if (!fs::exists(path)) return "missing";
  try {
    data::Store s(path);
    const auto& m = s.meta();
    if (m.kind != data::resolve_kind(r.data)) return "made for kind " + m.kind;
    if (m.tokenizer_checksum != tok.checksum()) return "made with another tokenizer";
    if (m.max_len != r.data.max_len) return fmt::format("made with max_len {}", m.max_len);
    if (m.sources.size() != 1 || m.sources[0].path != fs::absolute(src).string()) return "made from another file";
    if (m.sources[0].sha256 != sha256_file(src)) return src + " changed since";
    int64_t want = limit > 0 ? std::min(limit, m.sources[0].records) : m.sources[0].records;
    if (s.size() != want) return fmt::format("holds {} examples, the recipe asks for {}", s.size(), want);
    if (!r.data.labels.empty() && r.data.labels != s.label_names()) return "made with another label set";
  } catch (const Error& e) {
    return std::string("unreadable: ") + e.what();
  }
  return "";
}

}  // namespace

Stores Stores::open(const Recipe& r, const data::Tokenizer& tok, dist::World& world) {
  Stores st;
  st.device_ = world.device();
  st.train_path_ = (fs::path(r.data.store_dir) / "train.h5").string();
  st.eval_path_ = (fs::path(r.data.store_dir) / "eval.h5").string();
  std::string why = stale_reason(r, tok, st.train_path_, r.data.train, r.data.max_train_examples);
  if (why.empty() && !r.data.eval.empty()) {
    why = stale_reason(r, tok, st.eval_path_, r.data.eval, r.data.max_eval_examples);
    if (!why.empty()) why = "eval store " + why;
  }
  // The decision is all-reduced so that no rank enters preprocessing's barriers alone.
  int rebuild = !why.empty(), any = rebuild;
  MPI_Allreduce(&rebuild, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any) {
    log::info("tokenizing {} into {} ({})", r.data.train, r.data.store_dir, why.empty() ? "stale on another rank" : why);
    data::Parallel par;
    par.rank = world.rank();
    par.size = world.size();
    par.barrier = [] { MPI_Barrier(MPI_COMM_WORLD); };
    data::preprocess(r, tok, par);
  }
  st.train_ = data::Store(st.train_path_);
  st.train_.check_tokenizer(tok);
  st.train_opts_ = data::collate_options(r.data, st.train_);
  st.has_eval_ = !r.data.eval.empty() && fs::exists(st.eval_path_);
  if (st.has_eval_) {
    st.eval_ = data::Store(st.eval_path_);
    st.eval_.check_tokenizer(tok);
    st.eval_opts_ = data::collate_options(r.data, st.eval_);
  }
  return st;
}

data::Batch Stores::collate(Split s, const std::vector<int64_t>& indices) const {
  data::Batch b = data::collate(of(s), indices, s == Split::train ? train_opts_ : eval_opts_);
  if (!device_.is_cpu()) {
    b.input_ids = b.input_ids.to(device_);
    b.attention_mask = b.attention_mask.to(device_);
    b.labels = b.labels.to(device_);
  }
  return b;
}

}  // namespace kiln::methods
