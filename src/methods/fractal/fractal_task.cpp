#include "methods/fractal/fractal_task.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/config.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/log.h"
#include "data/store.h"
#include "methods/fractal/bags.h"
#include "methods/registry.h"
#include "model/hf_io.h"
#include "model/lora.h"
#include "model/pooling.h"
#include "parallel/communicator.h"
#include "parallel/world.h"
#include "train/checkpoint.h"
#include "train/metrics.h"

namespace kiln::methods::fractal {

namespace fs = std::filesystem;
using train::Split;

KILN_REGISTER_TASK("fractal", "FRACTAL: sentence scores learned from bag (response) labels, with priors and pseudo-labels",
                   FractalTask);

namespace {

const std::vector<std::string> kPhases = {"bag", "priors", "fractal", "supervised"};

double holdout_of(const Recipe& r) {
  recipe::Node tree = r.tree;  // read only: build() writes the defaults
  return recipe::Section::root(tree).sub("task").get_double("holdout", 0.0, 0.0, 0.9);
}

// Pooled final hidden states of token rows [N, T] with mask [N, T]: [N, H] float.
at::Tensor pool_states(model::Llama& model, const at::Tensor& ids, const at::Tensor& mask, model::Pooling pooling) {
  return model::pool(model->hidden_states(ids, mask).to(at::kFloat), mask, pooling);
}

// What the cached embeddings were made from: a cache made from anything else is made again.
std::string embedding_key(const Recipe& r, const std::string& store_path, const std::string& pooling, int64_t hidden) {
  nlohmann::json k;
  k["store_sha256"] = sha256_file(store_path);
  k["model"] = fs::absolute(r.model.path).string();
  k["dtype"] = r.model.dtype;
  k["pooling"] = pooling;
  k["hidden"] = hidden;
  std::vector<std::string> files;
  for (auto& e : fs::directory_iterator(r.model.path))
    if (e.path().extension() == ".safetensors")
      files.push_back(fmt::format("{}:{}:{}", e.path().filename().string(), fs::file_size(e.path()),
                                  fs::last_write_time(e.path()).time_since_epoch().count()));
  std::sort(files.begin(), files.end());
  k["weights"] = files;
  return k.dump();
}

}  // namespace

ScorerImpl::ScorerImpl(int64_t hidden) {
  const int64_t d = 2 * hidden;
  l1 = register_module("l1", torch::nn::Linear(d, d / 2));
  l2 = register_module("l2", torch::nn::Linear(d / 2, d / 4));
  l3 = register_module("l3", torch::nn::Linear(d / 4, 1));
}

at::Tensor ScorerImpl::forward(const at::Tensor& x) {
  return l3(at::gelu(l2(at::gelu(l1(x))))).squeeze(-1);
}

std::unique_ptr<data::Encoder> FractalTask::encoder(const Recipe& r) const { return make_encoder(holdout_of(r)); }

void FractalTask::build(Recipe& r, parallel::World& world, parallel::Communicator& comm) {
  recipe::Section task = recipe::Section::root(r.tree).sub("task");
  std::string def_agg = r.data.format == "prm800k" || r.data.format == "prm800k_raw" ? "min"
                        : r.data.format == "wikiqa"                                   ? "max"
                                                                                      : "";
  std::string agg = def_agg.empty() ? task.get_choice("aggregation", "", {"max", "min", "avg"})
                                    : task.get_choice("aggregation", def_agg, {"max", "min", "avg"});
  if (agg.empty())
    input_error("{}: key `task.aggregation`: how a bag's label follows from its sentences (max, min or avg) is "
                "required for data.format `{}`",
                task.where("aggregation"), r.data.format);
  agg_ = parse_aggregation(agg);
  pooling_ = model::parse_pooling(task.get_choice("pooling", "mean", {"mean", "last"}), task.where("pooling"));
  phases_ = task.get_strings("phases", kPhases);
  for (size_t i = 0; i < phases_.size(); ++i) {
    if (std::find(kPhases.begin(), kPhases.end(), phases_[i]) == kPhases.end())
      input_error("{}: key `task.phases`: `{}` is not a phase (bag, priors, fractal, supervised)", task.where("phases"),
                  phases_[i]);
    if (phases_[i] == "fractal" && (i == 0 || (phases_[i - 1] != "bag" && phases_[i - 1] != "priors")))
      input_error("{}: key `task.phases`: `fractal` labels the sentences with the scorer of the phase before it, which "
                  "must be `bag` or `priors`",
                  task.where("phases"));
  }
  w_bag_ = task.get_double("bag_weight", 0.8, 0, 1);
  w_cos_ = task.get_double("cos_weight", 0.1, 0, 1);
  w_corr_ = task.get_double("corr_weight", 0.1, 0, 1);
  cos_target_ = parse_cos_target(task.get_choice("cos_target", "one_plus", {"one_plus", "one_minus"}));
  task.get_double("holdout", 0.0, 0.0, 0.9);  // the encoder's
  embed_batch_ = task.get_int("embed_batch", 64, 1, 1 << 16);
  task.finish();
  tuned_ = r.lora.enabled;
  recipe_ = &r;
  device_ = world.device();

  model::Llama model = model::load_pretrained(r.model, device_);
  model->train(false);
  hidden_ = model->config().hidden_size;
  open_stores(r, model::load_tokenizer(r.model.path), comm);
  embed(r, Split::train, model, comm);
  if (stores_.has_eval()) embed(r, Split::eval, model, comm);
  if (tuned_) model_ = model;  // LoRA goes on in new_scorer
  new_scorer(0);
  int64_t sentences = 0;
  for (auto& rows : data_[0].rows) sentences += int64_t(rows.size()) - 1;
  log::info("fractal: {} train bags ({} sentences, {} distinct texts), {} eval bags; aggregation {}, pooling {}, "
            "phases {}",
            data_[0].rows.size(), sentences, data_[0].table.size(0), data_[1].rows.size(), agg, model::pooling_name(pooling_),
            fmt::join(phases_, ", "));
}

void FractalTask::embed(const Recipe& r, Split s, model::Llama& model, parallel::Communicator& comm) {
  const data::Store& store = stores_.of(s);
  SplitData& d = data_[int(s)];
  // Distinct texts (by their token ids): PRM800K's paths share most of their steps.
  std::unordered_map<std::string, int64_t> row_of;
  std::vector<std::vector<int32_t>> texts;
  d = SplitData{};
  for (int64_t i = 0; i < store.size(); ++i) {
    auto ids = store.ids(i);
    auto seg = store.get<int32_t>("segments", i);
    std::vector<int64_t> rows;
    int64_t off = 0;
    for (int32_t len : seg) {
      std::string key(reinterpret_cast<const char*>(ids.ptr + off), size_t(len) * sizeof(int32_t));
      auto [it, fresh] = row_of.emplace(key, int64_t(texts.size()));
      if (fresh) texts.emplace_back(ids.ptr + off, ids.ptr + off + len);
      rows.push_back(it->second);
      off += len;
    }
    d.rows.push_back(std::move(rows));
    d.gold.push_back(store.get<int32_t>("sentence_labels", i).vec());
    d.label.push_back(store.value<int32_t>("bag_label", i));
  }
  const int64_t U = int64_t(texts.size());
  const std::string cache = (fs::path(store.path()).parent_path() / (s == Split::train ? "train" : "eval")).string() + ".embeddings.h5";
  const std::string key = embedding_key(r, store.path(), model::pooling_name(pooling_), hidden_);

  at::Tensor table;
  try {
    if (fs::exists(cache)) {
      train::CheckpointFile c = train::read_checkpoint(cache);
      if (c.attrs.count("key") && c.attrs.at("key") == key) {
        at::Tensor t = c.group("embeddings").at(0).second;
        if (t.dim() == 2 && t.size(0) == U && t.size(1) == hidden_) table = t;
      }
    }
  } catch (const InputError& e) {
    log::warn("{}; computing the embeddings again", e.what());
  }
  at::Tensor missing = at::full({1}, table.defined() ? 0 : 1, at::TensorOptions().dtype(at::kLong));
  comm.all_reduce(missing, parallel::ReduceOp::Sum, "embedding cache");
  if (missing.item<int64_t>() == 0) {
    d.table = table.to(at::kFloat);
    return;
  }

  // Batches of texts of similar length, fixed for any number of ranks (rank r takes every N-th),
  // so every embedding is computed in the same batch, with the same shapes, on 1 rank as on N.
  std::vector<int64_t> order(static_cast<size_t>(U), 0);
  for (int64_t i = 0; i < U; ++i) order[size_t(i)] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return texts[size_t(a)].size() < texts[size_t(b)].size(); });
  const int64_t nb = (U + embed_batch_ - 1) / embed_batch_;
  std::vector<int64_t> mine_idx;
  std::vector<float> mine_rows;
  auto t0 = std::chrono::steady_clock::now();
  {
    at::NoGradGuard ng;
    for (int64_t b = comm.rank(); b < nb; b += comm.size()) {
      int64_t from = b * embed_batch_, to = std::min(U, from + embed_batch_), T = 0;
      for (int64_t k = from; k < to; ++k) T = std::max<int64_t>(T, int64_t(texts[size_t(order[size_t(k)])].size()));
      at::Tensor ids = at::zeros({to - from, T}, at::kLong), mask = at::zeros({to - from, T}, at::kLong);
      for (int64_t k = from; k < to; ++k) {
        const auto& t = texts[size_t(order[size_t(k)])];
        for (size_t j = 0; j < t.size(); ++j) ids[k - from][int64_t(j)] = t[j], mask[k - from][int64_t(j)] = 1;
      }
      at::Tensor pooled = pool_states(model, ids.to(device_), mask.to(device_), pooling_).to(at::kCPU).contiguous();
      for (int64_t k = from; k < to; ++k) mine_idx.push_back(order[size_t(k)]);
      mine_rows.insert(mine_rows.end(), pooled.data_ptr<float>(), pooled.data_ptr<float>() + pooled.numel());
    }
  }
  std::string bytes(sizeof(int64_t) * (1 + mine_idx.size()) + sizeof(float) * mine_rows.size(), '\0');
  int64_t n = int64_t(mine_idx.size());
  std::memcpy(bytes.data(), &n, sizeof n);
  std::memcpy(bytes.data() + sizeof n, mine_idx.data(), sizeof(int64_t) * mine_idx.size());
  std::memcpy(bytes.data() + sizeof n + sizeof(int64_t) * mine_idx.size(), mine_rows.data(),
              sizeof(float) * mine_rows.size());
  table = at::zeros({U, hidden_}, at::kFloat);
  for (const std::string& part : parallel::all_gather_bytes(bytes, comm)) {
    int64_t m = 0;
    std::memcpy(&m, part.data(), sizeof m);
    const auto* idx = reinterpret_cast<const int64_t*>(part.data() + sizeof m);
    const auto* rows = reinterpret_cast<const float*>(part.data() + sizeof m + sizeof(int64_t) * size_t(m));
    for (int64_t k = 0; k < m; ++k)
      std::memcpy(table[idx[k]].data_ptr<float>(), rows + k * hidden_, sizeof(float) * size_t(hidden_));
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log::info("fractal: embedded {} distinct {} texts in {:.1f} s on {} rank(s); cached in {}", U,
            s == Split::train ? "train" : "eval", secs, comm.size(), cache);
  // kiln eval / export write nothing beside the run's stores (Recipe::read_only).
  if (comm.rank() == 0 && !r.read_only) {
    // The cache saves time, nothing more: a failed write is a warning, and no rank is left waiting.
    try {
      train::CheckpointFile c;
      c.groups["embeddings"].emplace_back("table", table);
      c.attrs["key"] = key;
      train::write_checkpoint(cache, c);
    } catch (const Error& e) {
      log::warn("fractal: the embeddings could not be cached ({}); the next run computes them again", e.what());
    }
  }
  comm.barrier("embedding cache written", comm.slow_work_timeout_s());
  d.table = table;
}

at::Tensor FractalTask::pool(const at::Tensor& ids, const at::Tensor& mask) {
  return pool_states(model_, ids, mask, pooling_);
}

void FractalTask::new_scorer(int64_t salt) {
  // Same initial weights on every rank (the trainer broadcasts rank 0's anyway), another draw per phase.
  at::manual_seed(uint64_t(recipe_->train.seed) * 1000003u + uint64_t(salt));
  if (tuned_) {
    // A fresh encoder for each phase: the base weights again, new LoRA matrices.
    if (salt > 0) model_ = model::load_pretrained(recipe_->model, device_);
    model::apply_lora(model_, recipe_->lora, recipe_->model.freeze);
  }
  scorer_ = Scorer(hidden_);
  scorer_->to(device_);
}

void FractalTask::set_training(bool on) {
  scorer_->train(on);
  if (model_) model_->train(on);
}

void FractalTask::export_adapter(const std::string& dir) {
  if (!tuned_) input_error("lora.enabled is false: the encoder is frozen and there is no adapter to export");
  model::AdapterExport o;
  o.task_type = "FEATURE_EXTRACTION";
  for (auto& [name, p] : trainable())
    if (name.rfind("scorer.", 0) == 0) o.extra.emplace_back(name, p.detach());
  model::export_adapter(model_, dir, o);
}

train::ExportUse FractalTask::export_use(const train::ExportTarget&) const {
  return {"", false, "",
          "the sentence scorer (an MLP over pooled [context; sentence] states) has no transformers class; peft gives "
          "the encoder's hidden states only"};
}

void FractalTask::begin_phase(const std::string& name, parallel::Communicator&) {
  if (name == "fractal") {
    // The scorer of the phase before (trained, or loaded from its last checkpoint) labels every
    // training sentence; every rank computes the same labels from the same weights.
    const SplitData& d = data_[0];
    pseudo_.assign(d.rows.size(), {});
    int64_t agree = 0, known = 0, positive = 0, total = 0;
    at::NoGradGuard ng;
    scorer_->train(false);
    // Cached embeddings: large chunks; a tuned encoder runs every text: the training micro-batch.
    const int64_t chunk = tuned_ ? recipe_->train.micro_batch : 512;
    for (int64_t b = 0; b < int64_t(d.rows.size()); b += chunk) {
      std::vector<int64_t> idx;
      for (int64_t i = b; i < std::min<int64_t>(int64_t(d.rows.size()), b + chunk); ++i) idx.push_back(i);
      data::Batch batch = collate(Split::train, idx);
      at::Tensor p = at::sigmoid(logits(batch)).to(at::kCPU, at::kDouble).contiguous();
      for (size_t k = 0; k < idx.size(); ++k) {
        size_t i = size_t(idx[k]);
        int64_t n = int64_t(d.rows[i].size()) - 1;
        std::vector<double> probs(p[int64_t(k)].data_ptr<double>(), p[int64_t(k)].data_ptr<double>() + n);
        pseudo_[i] = pseudo_labels(probs, d.label[i], agg_);
        for (int64_t j = 0; j < n; ++j) {
          positive += pseudo_[i][size_t(j)];
          ++total;
          if (d.gold[i][size_t(j)] >= 0) agree += d.gold[i][size_t(j)] == pseudo_[i][size_t(j)], ++known;
        }
      }
    }
    log::info("fractal: pseudo-labels for {} training sentences: {:.1f}% positive; {:.1f}% agree with the gold "
              "labels (which training never sees)",
              total, 100.0 * double(positive) / double(std::max<int64_t>(total, 1)),
              100.0 * double(agree) / double(std::max<int64_t>(known, 1)));
  }
  mode_ = name;
  new_scorer(int64_t(std::find(kPhases.begin(), kPhases.end(), name) - kPhases.begin()) + 1);
}

train::NamedTensors FractalTask::trainable() {
  train::NamedTensors out;
  if (tuned_) out = model::trainable_parameters(model_);
  for (auto& p : scorer_->named_parameters()) out.emplace_back("scorer." + p.key(), p.value());
  return out;
}

data::Batch FractalTask::collate(Split s, const std::vector<int64_t>& idx) {
  const SplitData& d = data_[int(s)];
  const int64_t B = int64_t(idx.size());
  int64_t S = 1;
  for (int64_t i : idx) S = std::max<int64_t>(S, int64_t(d.rows[size_t(i)].size()) - 1);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor index = at::zeros({B, S + 1}, at::kLong), mask = at::zeros({B, S}, at::kBool);
  at::Tensor gold = at::full({B, S}, -1.0, f32), target = at::full({B, S}, -1.0, f32), y = at::empty({B}, f32);
  auto ia = index.accessor<int64_t, 2>();
  auto ma = mask.accessor<bool, 2>();
  auto ga = gold.accessor<float, 2>(), ta = target.accessor<float, 2>();
  const bool pseudo = s == Split::train && mode_ == "fractal", supervised = s == Split::train && mode_ == "supervised";
  int64_t labelled = 0;
  for (int64_t b = 0; b < B; ++b) {
    size_t i = size_t(idx[size_t(b)]);
    const auto& rows = d.rows[i];
    for (size_t k = 0; k < rows.size(); ++k) ia[b][int64_t(k)] = rows[k];
    for (size_t k = 0; k + 1 < rows.size(); ++k) {
      ma[b][int64_t(k)] = true;
      ga[b][int64_t(k)] = float(d.gold[i][k]);
      float t = pseudo ? float(pseudo_.at(i).at(k)) : supervised ? float(d.gold[i][k]) : -1.0f;
      ta[b][int64_t(k)] = t;
      labelled += t >= 0;
    }
    y[b] = float(d.label[i]);
  }
  at::Tensor emb = d.table.index_select(0, index.view({-1})).view({B, S + 1, hidden_});
  data::Batch batch;
  batch["context"] = emb.select(1, 0);
  batch["sentences"] = emb.narrow(1, 1, S);
  batch["mask"] = mask;
  batch["gold"] = gold;
  batch["target"] = target;
  batch["bag_label"] = y;
  batch["example_index"] = at::tensor(idx, at::kLong);
  if (tuned_) {
    // The bags' texts as token rows for the encoder: row k of `text_ids` is text `index` k (the
    // context of bag b at b * (S + 1), its sentence j at b * (S + 1) + 1 + j; padding rows hold a
    // BOS, and the sentence mask keeps them out of every loss).
    const data::Store& store = stores_.of(s);
    std::vector<std::vector<int32_t>> rows(size_t(B * (S + 1)), std::vector<int32_t>{store.meta().bos_id});
    int64_t T = 1;
    for (int64_t b = 0; b < B; ++b) {
      int64_t i = idx[size_t(b)];
      auto ids = store.ids(i);
      auto seg = store.get<int32_t>("segments", i);
      int64_t off = 0;
      for (int64_t k = 0; k < seg.size(); ++k) {
        rows[size_t(b * (S + 1) + k)].assign(ids.ptr + off, ids.ptr + off + seg[k]);
        T = std::max<int64_t>(T, seg[k]);
        off += seg[k];
      }
    }
    at::Tensor text_ids = at::zeros({int64_t(rows.size()), T}, at::kLong);
    at::Tensor text_mask = at::zeros({int64_t(rows.size()), T}, at::kLong);
    auto ta2 = text_ids.accessor<int64_t, 2>();
    auto tm2 = text_mask.accessor<int64_t, 2>();
    for (size_t k = 0; k < rows.size(); ++k)
      for (size_t j = 0; j < rows[k].size(); ++j) ta2[int64_t(k)][int64_t(j)] = rows[k][j], tm2[int64_t(k)][int64_t(j)] = 1;
    batch["text_ids"] = text_ids;
    batch["text_mask"] = text_mask;
  }
  batch.num_targets = s == Split::train && sentence_level() ? labelled : B;
  batch.to(device_);
  return batch;
}

int64_t FractalTask::tokens(const data::Batch& b) const { return b["mask"].sum().item<int64_t>(); }

at::Tensor FractalTask::logits(const data::Batch& b) {
  at::Tensor sent = b["sentences"], context = b["context"];
  if (tuned_) {
    const int64_t B = sent.size(0), S = sent.size(1);
    at::Tensor e = pool(b["text_ids"], b["text_mask"]).view({B, S + 1, hidden_});
    context = e.select(1, 0);
    sent = e.narrow(1, 1, S);
  }
  at::Tensor ctx = context.unsqueeze(1).expand({sent.size(0), sent.size(1), sent.size(2)});
  return scorer_->forward(at::cat({ctx, sent}, -1));
}

train::LossSum FractalTask::loss(const data::Batch& b) {
  at::Tensor lg = logits(b);
  const at::Tensor& mask = b["mask"];
  if (sentence_level()) return {instance_loss(lg, b["target"]), b.num_targets};
  at::Tensor l = bag_loss(lg, mask, b["bag_label"], agg_);
  if (mode_ == "priors") {
    l = w_bag_ * l + w_cos_ * cosine_prior(lg, mask, b["sentences"], b["context"], cos_target_) +
        w_corr_ * correlation_prior(lg, mask, b["sentences"]);
  }
  return {l, b.num_targets};
}

train::LossSum FractalTask::evaluate(const data::Batch& b, train::EvalRecords& out) {
  at::Tensor lg = logits(b);
  const at::Tensor& mask = b["mask"];
  at::Tensor p = at::sigmoid(lg).to(at::kCPU, at::kDouble).contiguous();
  at::Tensor bag = bag_probability(lg, mask, agg_).to(at::kCPU, at::kDouble);
  at::Tensor n = mask.sum(1).to(at::kCPU);
  at::Tensor gold = b["gold"].to(at::kCPU);
  at::Tensor ex = b["example_index"].to(at::kCPU);
  at::Tensor y = b["bag_label"].to(at::kCPU);
  for (int64_t r = 0; r < b.size(); ++r) {
    int64_t k = n[r].item<int64_t>();
    out.example.push_back(ex[r].item<int64_t>());
    out.vecs["scores"].emplace_back(p[r].data_ptr<double>(), p[r].data_ptr<double>() + k);
    std::vector<int32_t> g;
    for (int64_t j = 0; j < k; ++j) g.push_back(int32_t(gold[r][j].item<float>()));
    out.seqs["gold"].push_back(g);
    out.ints["bag_label"].push_back(int64_t(y[r].item<float>()));
    out.reals["bag_score"].push_back(bag[r].item<double>());
  }
  return {bag_loss(lg, mask, b["bag_label"], agg_).detach().to(at::kCPU), b.size()};
}

std::map<std::string, double> FractalTask::metrics(const train::EvalRecords& all) {
  const auto& scores = all.vecs_of("scores");
  const auto& gold = all.seqs_of("gold");
  std::vector<double> s;
  std::vector<int64_t> g;
  int64_t located = 0, wrong_bags = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    int64_t first_bad = -1;
    for (size_t j = 0; j < scores[i].size(); ++j) {
      if (gold[i][j] < 0) continue;
      s.push_back(scores[i][j]);
      g.push_back(gold[i][j]);
      if (gold[i][j] == 0 && first_bad < 0) first_bad = int64_t(j);
    }
    if (agg_ == Aggregation::min && first_bad >= 0) {
      ++wrong_bags;
      located += int64_t(std::min_element(scores[i].begin(), scores[i].end()) - scores[i].begin()) == first_bad;
    }
  }
  std::map<std::string, double> m;
  m["sentence_auc"] = train::auc_roc(s, g);
  // Undefined when every eval bag has one label (the filtered WikiQA splits hold only answered questions).
  double bag_auc = train::auc_roc(all.reals_of("bag_score"), all.ints_of("bag_label"));
  if (std::isfinite(bag_auc)) m["bag_auc"] = bag_auc;
  m["bags"] = double(scores.size());
  m["sentences"] = double(s.size());
  if (agg_ == Aggregation::min && wrong_bags > 0) m["first_wrong_step"] = double(located) / double(wrong_bags);
  return m;
}

}  // namespace kiln::methods::fractal
