#include "train/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/h5.h"
#include "core/log.h"
#include "data/sampler.h"
#include "parallel/communicator.h"
#include "parallel/world.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/task.h"
#include "core/files.h"
#include "core/hash.h"

#ifndef KILN_VERSION
#define KILN_VERSION "unknown"
#endif

namespace kiln::train {

namespace fs = std::filesystem;

namespace {

using h5::Handle;
using h5::read_string_attr;
using h5::write_string_attr;

// The file type of each dtype: native types where HDF5 has one (so h5py shows real numbers), the
// 16-bit floats as raw uint16 with the dtype in an attribute.
hid_t file_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return H5T_NATIVE_FLOAT;
    case at::kDouble: return H5T_NATIVE_DOUBLE;
    case at::kLong: return H5T_NATIVE_INT64;
    case at::kInt: return H5T_NATIVE_INT32;
    case at::kByte:
    case at::kBool: return H5T_NATIVE_UINT8;
    case at::kChar: return H5T_NATIVE_INT8;
    case at::kBFloat16:
    case at::kHalf:
    case at::kShort: return H5T_NATIVE_UINT16;
    default: throw InternalError(fmt::format("checkpoint: unsupported dtype {}", c10::toString(t)));
  }
}

at::ScalarType dtype_from_name(const std::string& s, const std::string& where) {
  static const std::map<std::string, at::ScalarType> m = {
      {"Float", at::kFloat}, {"Double", at::kDouble}, {"Long", at::kLong},   {"Int", at::kInt},
      {"Byte", at::kByte},   {"Bool", at::kBool},     {"Char", at::kChar},   {"BFloat16", at::kBFloat16},
      {"Half", at::kHalf},   {"Short", at::kShort}};
  auto it = m.find(s);
  if (it == m.end()) input_error("{}: unknown dtype `{}`", where, s);
  return it->second;
}

at::Tensor cpu_contiguous(const at::Tensor& t) { return t.detach().to(at::kCPU).contiguous(); }

// Attribute names are stored in the root group's `attrs` list, since HDF5 attributes cannot be
// enumerated cheaply in a fixed order.
constexpr const char* kAttrPrefix = "kiln.";

}  // namespace

const TensorList& CheckpointFile::group(const std::string& name) const {
  auto it = groups.find(name);
  if (it == groups.end()) input_error("checkpoint has no group `{}`", name);
  return it->second;
}

std::string CheckpointFile::sha256() const {
  Sha256 h;
  auto add_str = [&](const std::string& s) {
    uint64_t n = s.size();
    h.update(&n, sizeof(n));
    h.update(s.data(), s.size());
  };
  for (auto& [g, tensors] : groups) {
    add_str(g);
    // Sorted by name, so the checksum does not depend on the order tensors were listed in.
    std::vector<const std::pair<std::string, at::Tensor>*> sorted;
    for (auto& p : tensors) sorted.push_back(&p);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
    for (auto* p : sorted) {
      at::Tensor t = cpu_contiguous(p->second);
      add_str(p->first);
      add_str(c10::toString(t.scalar_type()));
      for (auto d : t.sizes()) {
        int64_t v = d;
        h.update(&v, sizeof(v));
      }
      h.update(t.data_ptr(), t.numel() * t.element_size());
    }
  }
  for (auto& [k, v] : attrs) {
    add_str(k);
    add_str(v);
  }
  return h.hex();
}

void write_checkpoint(const std::string& path, const CheckpointFile& c) {
  uint64_t bytes = 0;
  for (auto& [gname, tensors] : c.groups)
    for (auto& [name, t] : tensors) bytes += uint64_t(t.numel()) * t.element_size();
  h5::write_sealed(path, bytes, [&](hid_t file) {
    for (auto& [gname, tensors] : c.groups) {
      Handle g{H5Gcreate2(file, gname.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose};
      if (g.id < 0) h5::write_error(fmt::format("{}: cannot create group {}", path, gname));
      for (auto& [name, tensor] : tensors) {
        KILN_CHECK(name.find('/') == std::string::npos && !name.empty(), "checkpoint tensor name `{}`", name);
        at::Tensor t = cpu_contiguous(tensor);
        std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
        Handle space{dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
                     H5Sclose};
        hid_t type = file_type(t.scalar_type());
        Handle ds{H5Dcreate2(g.id, name.c_str(), type, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
        if (ds.id < 0) h5::write_error(fmt::format("{}: cannot create dataset {}/{}", path, gname, name));
        if (t.numel() > 0 && H5Dwrite(ds.id, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
          h5::write_error(fmt::format("{}: cannot write {}/{}", path, gname, name));
        write_string_attr(ds.id, "dtype", c10::toString(t.scalar_type()));
      }
    }
    for (auto& [k, v] : c.attrs) write_string_attr(file, (kAttrPrefix + k).c_str(), v);
    write_string_attr(file, "sha256", c.sha256());
  });
}

namespace {
struct ReadCtx {
  hid_t group;
  std::string path;
  uint64_t file_size;
  TensorList* out;
  std::string error;
};

herr_t read_dataset(hid_t g, const char* name, const H5L_info_t*, void* op) {
  auto* ctx = static_cast<ReadCtx*>(op);
  Handle ds{H5Dopen2(g, name, H5P_DEFAULT), H5Dclose};
  std::string dtype;
  if (ds.id < 0 || !read_string_attr(ds.id, "dtype", dtype)) {
    ctx->error = fmt::format("dataset `{}` unreadable", name);
    return -1;
  }
  at::ScalarType st;
  try {
    st = dtype_from_name(dtype, ctx->path);
  } catch (const InputError& e) {
    ctx->error = e.what();
    return -1;
  }
  Handle space{H5Dget_space(ds.id), H5Sclose};
  int nd = H5Sget_simple_extent_ndims(space.id);
  if (nd < 0) {
    ctx->error = fmt::format("dataset `{}` has a bad shape", name);
    return -1;
  }
  std::vector<hsize_t> dims(static_cast<size_t>(nd));
  if (nd > 0) H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
  // Datasets are stored whole and uncompressed: one that needs more bytes than the file holds is
  // damaged, and allocating for its shape could ask for exabytes.
  uint64_t bytes = c10::elementSize(st);
  for (hsize_t d : dims) {
    if (d != 0 && bytes > ctx->file_size / d) {
      ctx->error = fmt::format("dataset `{}` has a shape larger than the file", name);
      return -1;
    }
    bytes *= d;
  }
  std::vector<int64_t> shape(dims.begin(), dims.end());
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(st));
  if (t.numel() > 0 && H5Dread(ds.id, file_type(st), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0) {
    ctx->error = fmt::format("dataset `{}` unreadable", name);
    return -1;
  }
  ctx->out->emplace_back(name, t);
  return 0;
}

struct GroupCtx {
  CheckpointFile* c;
  std::string path;
  uint64_t file_size;
  std::string error;
};

herr_t read_group(hid_t file, const char* name, const H5L_info_t*, void* op) {
  auto* gctx = static_cast<GroupCtx*>(op);
  Handle g{H5Gopen2(file, name, H5P_DEFAULT), H5Gclose};
  if (g.id < 0) {
    gctx->error = fmt::format("group `{}` unreadable", name);
    return -1;
  }
  ReadCtx ctx{g.id, gctx->path, gctx->file_size, &gctx->c->groups[name], ""};
  hsize_t idx = 0;
  if (H5Literate(g.id, H5_INDEX_NAME, H5_ITER_INC, &idx, read_dataset, &ctx) < 0) {
    gctx->error = ctx.error.empty() ? fmt::format("group `{}` unreadable", name) : ctx.error;
    return -1;
  }
  return 0;
}

herr_t collect_attr(hid_t obj, const char* name, const H5A_info_t*, void* op) {
  static_cast<std::vector<std::string>*>(op)->push_back(name);
  return 0;
}
}  // namespace

namespace {
CheckpointFile read_checkpoint_unchecked(const std::string& path);
}

// A damaged file can fail in torch (a garbage shape) or the allocator as well as in HDF5: every
// failure reads as "corrupt", so auto-resume and retention fall back instead of stopping.
CheckpointFile read_checkpoint(const std::string& path) {
  try {
    return read_checkpoint_unchecked(path);
  } catch (const InputError&) {
    throw;
  } catch (const std::exception& e) {
    input_error("checkpoint {} is corrupt: {}", path, shorten(e.what(), 200));
  }
}

namespace {
CheckpointFile read_checkpoint_unchecked(const std::string& path) {
  h5::quiet();
  if (!fs::exists(path)) input_error("checkpoint {} does not exist", path);
  // The seal covers every byte, so nothing damaged reaches the HDF5 parser (h5.h).
  if (std::string problem = h5::seal_problem(path); !problem.empty())
    input_error("checkpoint {} is corrupt: {}", path, problem);
#if H5_VERSION_GE(1, 12, 0)
  const htri_t is_hdf5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
#endif
  if (is_hdf5 <= 0)
    input_error("checkpoint {} is corrupt: truncated or not an HDF5 file ({} bytes)", path, fs::file_size(path));
  Handle file{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) input_error("checkpoint {} is corrupt: HDF5 cannot open it (truncated?)", path);
  CheckpointFile c;
  std::string stored;
  if (!read_string_attr(file.id, "sha256", stored))
    input_error("checkpoint {} is corrupt or not a kiln checkpoint: no readable `sha256` attribute", path);
  std::vector<std::string> names;
  hsize_t aidx = 0;
  if (H5Aiterate2(file.id, H5_INDEX_NAME, H5_ITER_INC, &aidx, collect_attr, &names) < 0)
    input_error("checkpoint {} is corrupt: attributes unreadable", path);
  for (auto& n : names) {
    if (n.rfind(kAttrPrefix, 0) != 0) continue;
    std::string v;
    if (!read_string_attr(file.id, n.c_str(), v)) input_error("checkpoint {} is corrupt: attribute `{}` unreadable", path, n);
    c.attrs[n.substr(std::strlen(kAttrPrefix))] = v;
  }
  GroupCtx gctx{&c, path, fs::file_size(path), ""};
  hsize_t idx = 0;
  if (H5Literate(file.id, H5_INDEX_NAME, H5_ITER_INC, &idx, read_group, &gctx) < 0)
    input_error("checkpoint {} is corrupt: {}", path, gctx.error.empty() ? "unreadable" : gctx.error);
  // The contents' own sha256 (stored) is not recomputed: the seal already covered every byte, and
  // hashing a large checkpoint twice would double the time a resume spends verifying it.
  return c;
}
}  // namespace

std::string checkpoint_name(int64_t step) { return fmt::format("step-{:08d}.h5", step); }

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  static const std::regex re(R"(step-(\d+)\.h5)");
  for (auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    std::string name = e.path().filename().string();
    if (e.is_regular_file() && std::regex_match(name, m, re)) out.emplace_back(std::stoll(m[1]), e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string move_aside(const std::string& path, const std::string& suffix) {
  std::string to = path + "." + suffix;
  for (int i = 1; fs::exists(to); ++i) to = fmt::format("{}.{}.{}", path, suffix, i);
  std::error_code ec;
  fs::rename(path, to, ec);
  if (ec) input_error("cannot move {} aside to {}: {}", path, to, ec.message());
  return to;
}

void Retention::protect(const std::string& path) {
  if (!path.empty()) protected_.push_back(fs::weakly_canonical(path).string());
}

void Retention::set_best(const std::string& path) { best_ = path.empty() ? "" : fs::weakly_canonical(path).string(); }

void Retention::written(const std::string& path) { good_.push_back(fs::weakly_canonical(path).string()); }

void Retention::prune() {
  if (keep_ <= 0) return;  // every checkpoint stays: nothing to count, nothing to read
  auto has = [](const std::vector<std::string>& v, const std::string& p) {
    return std::find(v.begin(), v.end(), p) != v.end();
  };
  auto all = list_checkpoints(dir_);
  int64_t good = 0;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const std::string path = fs::weakly_canonical(it->second).string();
    if (good < keep_) {
      if (!has(good_, path)) {
        try {
          read_checkpoint(path);
        } catch (const InputError& e) {
          log::warn("{}; kept as {} and not counted among checkpoint.keep", e.what(), move_aside(path, "corrupt"));
          continue;
        }
        good_.push_back(path);
      }
      ++good;
    } else if (!has(protected_, path) && path != best_) {
      std::error_code ec;
      fs::remove(path, ec);
    }
  }
}

std::optional<BestCheckpoint> read_best(const std::string& run_dir, const std::string& metric, const std::string& mode) {
  const fs::path file = fs::path(run_dir) / "best.json";
  if (!fs::exists(file)) return std::nullopt;
  std::ifstream in(file);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.contains("step") || !j.contains("value") || !j.contains("checkpoint"))
    input_error("{}: not a best-checkpoint record (remove it to start the comparison over)", file.string());
  BestCheckpoint b{j.value("metric", ""), j.value("mode", ""), j["value"].get<double>(), j["step"].get<int64_t>(),
                   j["checkpoint"].get<std::string>()};
  // Another metric or direction than the recipe's: not comparable, so the run starts over.
  if (b.metric != metric || b.mode != mode) return std::nullopt;
  if (!fs::exists(b.path)) {
    log::warn("{}: its checkpoint {} is gone; the best evaluation is looked for anew", file.string(), b.path);
    return std::nullopt;
  }
  return b;
}

void write_best(const std::string& run_dir, const BestCheckpoint& b) {
  nlohmann::json j{{"metric", b.metric}, {"mode", b.mode}, {"value", b.value}, {"step", b.step}, {"checkpoint", b.path}};
  write_file_atomic((fs::path(run_dir) / "best.json").string(), j.dump(2) + "\n");
}

// ---- what a training checkpoint holds ----

CheckpointFile capture_checkpoint(TrainingState& s) {
  CheckpointFile c;
  // Only rank 0 writes the file, so only rank 0 copies to host memory (one copy, whatever the device).
  const bool root = s.world.is_root();
  auto host_copy = [](const at::Tensor& t) { return t.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true); };
  if (root)
    for (auto& [name, p] : s.params) c.groups["weights"].emplace_back(name, host_copy(p));
  KILN_CHECK(s.optimizer, "capture_checkpoint: no optimizer (an evaluation-only trainer)");
  c.groups["optimizer"] = s.optimizer->state(root);  // host copies already; collective when sharded
  if (root)
    for (auto& [name, t] : s.task.extra_state()) c.groups["extra"].emplace_back(name, host_copy(t));
  // RNG states of every rank (dropout masks): gathered, since rank 0 writes the file alone.
  auto gather_state = [&](at::Tensor t, const std::string& kind) {
    t = t.contiguous();
    at::Tensor all = at::empty({s.world.size() * t.numel()}, t.options());
    if (s.world.size() > 1)
      s.comm.all_gather(all, t, "rng states");
    else
      all.copy_(t.reshape({-1}));
    for (int r = 0; r < s.world.size(); ++r)
      c.groups["rng"].emplace_back(fmt::format("{}.rank{}", kind, r), all.narrow(0, r * t.numel(), t.numel()).clone());
  };
  gather_state(at::detail::getDefaultCPUGenerator().get_state(), "cpu");
  if (s.world.device().is_cuda())
    gather_state(at::globalContext().defaultGenerator(s.world.device()).get_state().to(at::kCPU), "cuda");

  nlohmann::json meta;
  auto st = s.sampler.state();
  meta["format"] = 1;
  meta["kiln_version"] = KILN_VERSION;
  meta["method"] = s.recipe.method;
  meta["step"] = s.step;
  meta["tokens_seen"] = s.tokens_seen;
  meta["total_steps"] = s.schedule.total();
  meta["optimizer"] = {{"kind", "adamw"}, {"steps", s.optimizer->steps()}};
  meta["schedule"] = {{"kind", s.schedule.kind()}, {"lr", s.recipe.train.lr}, {"warmup", s.schedule.warmup()}, {"total", s.schedule.total()}};
  meta["sampler"] = {{"epoch", st.epoch}, {"position", st.position}};
  meta["world_size"] = s.world.size();
  meta["global_batch"] = s.global_batch;
  meta["micro_batch"] = s.recipe.train.micro_batch;
  meta["seed"] = s.recipe.train.seed;
  c.attrs["meta"] = meta.dump();
  c.attrs["recipe"] = recipe::to_yaml(s.recipe.tree);
  return c;
}

void restore_checkpoint(TrainingState& s, const CheckpointFile& c, const std::string& path, bool weights_only) {
  nlohmann::json meta = nlohmann::json::parse(c.attrs.count("meta") ? c.attrs.at("meta") : "", nullptr, false);
  if (meta.is_discarded() || !meta.contains("step")) input_error("checkpoint {}: no readable `meta` attribute", path);
  if (meta.value("method", "") != s.recipe.method)
    input_error("checkpoint {} was written by method `{}`, this recipe runs `{}`", path, meta.value("method", ""),
                s.recipe.method);
  int64_t gb = meta.value("global_batch", int64_t(0));
  if (!weights_only && gb != s.global_batch)
    input_error("checkpoint {} was trained with a global batch of {}, this run has {}: set train.global_batch={} to "
                "continue the same sequence of batches",
                path, gb, s.global_batch, gb);
  {
    at::NoGradGuard ng;
    std::map<std::string, at::Tensor> w(c.group("weights").begin(), c.group("weights").end());
    for (auto& [name, p] : s.params) {
      auto it = w.find(name);
      if (it == w.end()) input_error("checkpoint {} has no weight `{}` (another LoRA setup or method?)", path, name);
      if (!it->second.sizes().equals(p.sizes()))
        input_error("checkpoint {}: weight `{}` has shape [{}], the model needs [{}]", path, name,
                    fmt::join(it->second.sizes(), ", "), fmt::join(p.sizes(), ", "));
      p.copy_(it->second);
      w.erase(it);
    }
    // A weight the run trained that this recipe keeps frozen (model.freeze, lora.* changed since)
    // would silently come from the base model instead.
    if (!w.empty())
      input_error("checkpoint {} holds trained weight `{}`{}, which this recipe does not train (were model.freeze or "
                  "lora.* changed since the run?): loading would drop it",
                  path, w.begin()->first, w.size() > 1 ? fmt::format(" and {} more", w.size() - 1) : std::string());
    if (c.groups.count("extra")) {
      std::map<std::string, at::Tensor> x(c.group("extra").begin(), c.group("extra").end());
      for (auto& [name, t] : s.task.extra_state()) {
        auto it = x.find(name);
        if (it == x.end()) input_error("checkpoint {} has no state `{}`", path, name);
        t.copy_(it->second);
      }
    }
  }
  if (weights_only) {
    s.step = meta["step"].get<int64_t>();
    return;
  }
  try {
    KILN_CHECK(s.optimizer, "restore_checkpoint: no optimizer to restore (an evaluation-only trainer)");
    s.optimizer->load_state(c.group("optimizer"), meta["optimizer"].value("steps", int64_t(0)));
  } catch (const InputError& e) {
    throw InputError(fmt::format("checkpoint {}: {}", path, e.what()));
  }
  s.step = meta["step"].get<int64_t>();
  s.tokens_seen = meta.value("tokens_seen", int64_t(0));  // 0 in checkpoints older than the field
  data::Sampler::State st;
  st.epoch = meta["sampler"]["epoch"].get<int64_t>();
  st.position = meta["sampler"]["position"].get<int64_t>();
  s.sampler.set_state(st);

  int saved_world = meta.value("world_size", 0);
  if (saved_world == s.world.size()) {
    std::map<std::string, at::Tensor> rng(c.group("rng").begin(), c.group("rng").end());
    auto cpu = rng.find(fmt::format("cpu.rank{}", s.world.rank()));
    // A Generator is a handle: the copy sets the state of the default generator itself.
    if (cpu != rng.end()) {
      at::Generator g = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_state(cpu->second);
    }
    auto cuda = rng.find(fmt::format("cuda.rank{}", s.world.rank()));
    if (s.world.device().is_cuda() && cuda != rng.end()) {
      at::Generator g = at::globalContext().defaultGenerator(s.world.device());
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_state(cuda->second);
    }
  } else {
    log::warn("resuming on {} ranks from a checkpoint written by {}: weights, optimizer, schedule and the sequence of "
              "global batches continue; random streams (dropout) restart from the seed",
              s.world.size(), saved_world);
    at::manual_seed(uint64_t(s.recipe.train.seed) + uint64_t(s.step) * 1000003u + uint64_t(s.world.rank()));
  }
}

namespace {

// checkpoint.rewind: the newer checkpoints, and what the run wrote after them (results, adapter,
// TensorBoard events, a method's files), go into <run_dir>/rewound-<from>-<time>/; metrics.jsonl is
// copied there (the resumed run keeps its lines up to the resumed step). Left in place: the older
// checkpoints, recipe.yaml, the data store, earlier rewound-* folders, phase folders.
void rewind_aside(const Recipe& r, const std::string& run_dir, int64_t from,
                  const std::vector<std::pair<int64_t, std::string>>& newer) {
  char stamp[32];
  std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  const fs::path run(run_dir), dest = run / fmt::format("rewound-{}-{}", from, stamp);
  fs::create_directories(dest / "checkpoints");
  for (auto& [step, path] : newer) fs::rename(path, dest / "checkpoints" / fs::path(path).filename());
  std::error_code ec;
  const fs::path store = fs::weakly_canonical(r.data.store_dir, ec);
  for (auto& e : fs::directory_iterator(run)) {
    const std::string name = e.path().filename().string();
    if (name == "checkpoints" || name == "recipe.yaml" || name.rfind("rewound-", 0) == 0) continue;
    if (fs::weakly_canonical(e.path(), ec) == store || (e.is_directory() && fs::exists(e.path() / "checkpoints"))) continue;
    if (name == "metrics.jsonl")
      fs::copy_file(e.path(), dest / name);
    else
      fs::rename(e.path(), dest / name);
  }
  log::warn("rewinding to step {}: {} newer checkpoint(s) (newest: step {}), results and logs moved to {}", from,
            newer.size(), newer.back().first, dest.string());
}

}  // namespace

std::string choose_resume(const Recipe& r, const std::string& run_dir, parallel::Communicator& comm, bool training) {
  const std::string& mode = r.checkpoint.resume;
  const std::string ckpt_dir = (fs::path(run_dir) / "checkpoints").string();
  auto pick_newest_good = [&](const std::string& dir, bool fallback) -> std::string {
    auto all = list_checkpoints(dir);
    std::vector<std::string> corrupt;
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      try {
        read_checkpoint(it->second);
      } catch (const InputError& e) {
        if (!fallback) throw;
        log::warn("{}; trying the previous checkpoint", e.what());
        corrupt.push_back(it->second);
        continue;
      }
      // Out of the listing, so that they are neither counted by checkpoint.keep nor resumed from
      // later; renamed, not deleted. Only when a good one was found: all corrupt is an error that
      // leaves the directory as it was.
      if (training)
        for (auto& c : corrupt) log::warn("{} renamed {}", c, move_aside(c, "corrupt"));
      return it->second;
    }
    if (!all.empty())
      input_error("no usable checkpoint in {}: all {} are corrupt (set checkpoint.resume=none to start over)", dir,
                  all.size());
    return "";
  };
  std::string chosen, error;
  // Rank 0 chooses (reading every candidate once); the others follow, so all resume from one file.
  if (comm.rank() == 0) {
    try {
      if (mode == "auto" && !training && !r.checkpoint.keep_best.empty()) {
        // Evaluation and export take the run's best checkpoint (checkpoint.keep_best).
        auto best = read_best(run_dir, r.checkpoint.keep_best, r.checkpoint.best_mode);
        chosen = best ? best->path : pick_newest_good(ckpt_dir, true);
        if (best) read_checkpoint(chosen);
      } else if (mode == "auto") {
        chosen = pick_newest_good(ckpt_dir, true);
      } else if (mode == "none") {
        // a fresh start
      } else if (fs::is_directory(mode)) {
        std::string dir = fs::is_directory(fs::path(mode) / "checkpoints") ? (fs::path(mode) / "checkpoints").string() : mode;
        chosen = pick_newest_good(dir, false);
        if (chosen.empty()) input_error("checkpoint.resume: no checkpoint in {}", mode);
      } else {
        read_checkpoint(mode);  // names the problem: missing, truncated, corrupt
        chosen = mode;
      }
      // A run directory holds one run: starting over in it, or continuing another run's checkpoint
      // there, would overwrite its checkpoints and logs, and a later `auto` could pick up a stale one.
      if (mode != "auto" && training) {
        auto mine = list_checkpoints(ckpt_dir);
        if (!mine.empty() && (chosen.empty() || !fs::equivalent(fs::path(chosen).parent_path(), ckpt_dir)))
          input_error("key `checkpoint.resume`: `{}` would start a new run in {}, which holds the checkpoints of an "
                      "earlier run (newest: step {}); give another checkpoint.run_dir, or remove that directory",
                      mode, run_dir, mine.back().first);
        // An older checkpoint of this run: continuing from it would write over the newer ones.
        int64_t from = -1;
        for (auto& [step, path] : mine)
          if (fs::equivalent(path, chosen)) from = step;
        if (from < 0 && !chosen.empty()) {
          // A file of this folder under another name (a copy, step-N.h5.old): its own step.
          nlohmann::json meta = nlohmann::json::parse(read_checkpoint(chosen).attrs["meta"], nullptr, false);
          if (!meta.is_discarded()) from = meta.value("step", int64_t(-1));
        }
        std::vector<std::pair<int64_t, std::string>> newer;
        for (auto& c : mine)
          if (c.first > from) newer.push_back(c);
        if (from >= 0 && !newer.empty()) {
          if (!r.checkpoint.rewind)
            input_error("key `checkpoint.resume`: {} is step {} of the run in {}, which has {} newer checkpoint(s) "
                        "(newest: step {}) that continuing would overwrite; set checkpoint.rewind=true to move them, "
                        "with the run's results and logs, into {}/rewound-{}-<time>/ and continue from step {}",
                        chosen, from, run_dir, newer.size(), newer.back().first, run_dir, from, from);
          rewind_aside(r, run_dir, from, newer);
        }
      }
    } catch (const InputError& e) {
      error = std::string("!") + e.what();
    } catch (const std::exception& e) {  // e.g. a rename that failed: every rank must hear of it
      error = std::string("#") + e.what();
    }
  }
  // Rank 0 may read several large checkpoints first.
  if (comm.size() > 1) comm.barrier("choosing the checkpoint to resume", comm.slow_work_timeout_s());
  std::string verdict = parallel::all_gather_bytes(error.empty() ? "+" + chosen : error, comm)[0];
  if (verdict[0] == '!') throw InputError(verdict.substr(1));
  if (verdict[0] == '#') throw InternalError(verdict.substr(1));
  return verdict.substr(1);
}

}  // namespace kiln::train
