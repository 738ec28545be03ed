#include "methods/ls_llama/ls_llama_task.h"

#include <fmt/ranges.h>

#include <filesystem>

#include "core/config.h"
#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "data/align.h"
#include "data/tokenizer.h"
#include "methods/ls_llama/data.h"
#include "parallel/world.h"
#include "methods/registry.h"
#include "model/hf_io.h"
#include "model/lora.h"
#include "train/metrics.h"

namespace kiln::methods::ls_llama {

namespace fs = std::filesystem;

KILN_REGISTER_TASK("ls_llama",
                   "LS-LLaMA / LS-unLLaMA: sequence or token classification from the decoder's hidden states", LsLlamaTask);

namespace {

std::vector<int32_t> row_i32(const at::Tensor& t2d, int64_t r) {
  at::Tensor row = t2d[r].to(at::kCPU, at::kInt).contiguous();
  return std::vector<int32_t>(row.data_ptr<int32_t>(), row.data_ptr<int32_t>() + row.numel());
}

}  // namespace

std::unique_ptr<data::Encoder> LsLlamaTask::encoder(const Recipe& r) const { return make_encoder(r.data); }

void LsLlamaTask::prepare(Split, data::Batch& b) const {
  if (b.has("token_labels")) {
    b["labels"] = b["token_labels"];
    b.num_targets = b["labels"].ne(data::kIgnore).sum().item<int64_t>();
  } else {
    b.num_targets = b.size();
  }
}

void LsLlamaTask::build(Recipe& r, parallel::World& world, parallel::Communicator& comm) {
  recipe::Section task = recipe::Section::root(r.tree).sub("task");
  pooling_ = model::parse_pooling(task.get_choice("pooling", "last", {"last", "mean", "max"}), task.where("pooling"));
  // The token head follows transformers' LlamaForTokenClassification (dropout 0.1). The official
  // sequence classes have none (paper recipes set 0); 0.1 stays the default for recipes written
  // before issue 32.
  const double dropout = task.get_double("head_dropout", 0.1, 0.0, 0.99);
  pads_attended_ = task.get_choice("pads", "masked", {"masked", "attended"}) == "attended";
  // transformers' initializer_range default: the head starts near zero, so the first steps train it
  // without a large random logit offset.
  const double init_std = task.get_double("head_init_std", 0.02, 0.0, 1.0);
  const std::string adapter = task.get_path("adapter", "");
  task.finish();

  device_ = world.device();
  model_ = model::load_pretrained(r.model, device_);
  data::Tokenizer tok = model::load_tokenizer(r.model.path);

  open_stores(r, tok, comm);
  const std::string& train_path = stores_.train_path();
  token_ = stores_.train().kind() == "token_classification";
  labels_ = stores_.train().label_names();
  if (labels_.size() < 2) input_error("{}: {} label(s); classification needs at least 2", train_path, labels_.size());
  if (stores_.has_eval() && stores_.eval().label_names() != labels_)
    input_error("{}: label set differs from {}'s", stores_.eval_path(), train_path);
  outside_ = 0;
  for (size_t i = 0; i < labels_.size(); ++i)
    if (labels_[i] == "O") outside_ = int32_t(i);

  hf_ = {token_, pooling_, r.model.attention == "bidirectional", pads_attended_, labels_};
  pad_id_ = stores_.train().meta().pad_id;

  const int64_t hidden = model_->config().hidden_size, L = int64_t(labels_.size());
  head_ = token_ ? token_head(hidden, L, dropout, init_std, device_) : sequence_head(hidden, L, dropout, init_std, device_);
  if (adapter.empty()) {
    // A merged export of this method (`kiln export --merged`) carries its trained head: start from it.
    int64_t from_model = 0;
    for (auto& [name, p] : head_params()) {
      at::Tensor t = model::load_head_tensor(r.model.path, name);
      if (!t.defined()) continue;
      if (t.sizes() != p.sizes())
        input_error("{}: `{}` has shape {}, this recipe's head needs {} ({} labels)", r.model.path, name,
                    fmt::join(t.sizes(), "x"), fmt::join(p.sizes(), "x"), L);
      at::NoGradGuard ng;
      p.copy_(t);
      ++from_model;
    }
    if (from_model > 0) log::info("ls_llama: head `{}` loaded from {}", head_name(), r.model.path);
    model::apply_lora(model_, r.lora, r.model.freeze);
  } else {
    model::LoadedAdapter a = model::load_adapter(model_, adapter);
    const std::string want = token_ ? "TOKEN_CLS" : "SEQ_CLS";
    if (a.task_type != want)
      input_error("{}: key `task.adapter`: {} is a {} adapter; this recipe trains {}", task.where("adapter"), adapter,
                  a.task_type, want);
    std::map<std::string, at::Tensor> extra(a.extra.begin(), a.extra.end());
    for (auto& [name, p] : head_params()) {
      auto it = extra.find(name);
      if (it == extra.end()) input_error("{}: the adapter has no `{}` (the classification head)", adapter, name);
      if (it->second.sizes() != p.sizes())
        input_error("{}: `{}` has shape {}, this recipe's head needs {} ({} labels)", adapter, name,
                    fmt::join(it->second.sizes(), "x"), fmt::join(p.sizes(), "x"), L);
      at::NoGradGuard ng;
      p.copy_(it->second);
    }
    log::info("ls_llama: started from adapter {} (LoRA r={}, alpha={})", adapter, a.lora.r, a.lora.alpha);
  }

  int64_t n_params = 0;
  for (auto& [name, p] : trainable()) n_params += p.numel();
  log::info("ls_llama: {} classification, {} labels, attention {}{}, {}; {} train / {} eval examples; {} trainable "
            "parameters",
            token_ ? "token" : "sequence", L, r.model.attention, pads_attended_ ? " (pads attended)" : "",
            token_ ? std::string("per-token head") : fmt::format("pooling {}", model::pooling_name(pooling_)),
            stores_.size(Split::train), stores_.size(Split::eval), n_params);
}

NamedTensors LsLlamaTask::head_params() {
  NamedTensors out;
  for (auto& p : head_->named_parameters()) out.emplace_back(head_name() + "." + p.key(), p.value());
  return out;
}

NamedTensors LsLlamaTask::trainable() {
  NamedTensors out = model::trainable_parameters(model_);
  for (auto& p : head_params()) out.push_back(p);
  return out;
}

void LsLlamaTask::set_training(bool on) {
  model_->train(on);
  head_->train(on);
}

at::Tensor LsLlamaTask::logits(const data::Batch& b) {
  const at::Tensor& mask = b["attention_mask"];
  // The official UnmaskingLlamaModel replaces the whole 4-D mask with zeros: no causal mask and no
  // padding mask either, so real tokens attend to pads.
  at::Tensor hidden = model_->hidden_states(b["input_ids"], pads_attended_ ? at::ones_like(mask) : mask);  // [B, T, H]
  if (token_) return head_->forward(hidden);
  return sequence_logits(*head_, hidden, mask, pooling_, pads_attended_);
}

LossSum LsLlamaTask::loss(const data::Batch& b) {
  at::Tensor lg = logits(b);
  at::Tensor sum = at::cross_entropy_loss(lg.reshape({-1, lg.size(-1)}), b["labels"].reshape({-1}), {}, at::Reduction::Sum,
                                          data::kIgnore);
  return {sum, b.num_targets};
}

LossSum LsLlamaTask::evaluate(const data::Batch& b, train::EvalRecords& out) {
  at::NoGradGuard ng;
  at::Tensor lg = logits(b);
  at::Tensor sum = at::cross_entropy_loss(lg.reshape({-1, lg.size(-1)}), b["labels"].reshape({-1}), {}, at::Reduction::Sum,
                                          data::kIgnore);
  at::Tensor pred = lg.argmax(-1).to(at::kCPU);
  at::Tensor ex = b["example_index"].to(at::kCPU);
  at::Tensor gold_labels = b["labels"].to(at::kCPU);
  for (int64_t r = 0; r < b.size(); ++r) {
    int64_t i = ex[r].item<int64_t>();
    out.example.push_back(i);
    if (token_) {
      // Word level: the prediction at each word's first sub-token; words cut off by max_len count
      // as `O`, and the gold tags are the full sentence's, so truncation costs recall, as it should.
      std::vector<int32_t> gold = stores_.eval().get<int32_t>("word_tags", i).vec();
      out.seqs["gold_tags"].push_back(gold);
      out.seqs["pred_tags"].push_back(
          data::word_predictions(row_i32(b["word_ids"], r), row_i32(pred, r), int64_t(gold.size()), outside_));
      // The real tokens' logits, for predictions.tsv: what checks against transformers compare.
      at::Tensor real = b["attention_mask"][r].to(at::kCPU).ne(0);
      out.seqs["token_ids"].push_back(row_i32(b["input_ids"].to(at::kCPU)[r].masked_select(real).unsqueeze(0), 0));
      out.seqs["token_gold"].push_back(row_i32(gold_labels[r].masked_select(real).unsqueeze(0), 0));
      at::Tensor l = lg[r].to(at::kCPU, at::kDouble).index({real}).contiguous();
      out.vecs["logits"].emplace_back(l.data_ptr<double>(), l.data_ptr<double>() + l.numel());
    } else {
      out.ints["pred"].push_back(pred[r].item<int64_t>());
      out.ints["gold"].push_back(gold_labels[r].item<int64_t>());
    }
  }
  if (!token_) {
    // The head's logits per class: predictions.tsv, and what checks against transformers compare.
    at::Tensor l = lg.to(at::kCPU, at::kDouble).contiguous();
    for (int64_t r = 0; r < l.size(0); ++r)
      out.vecs["logits"].emplace_back(l[r].data_ptr<double>(), l[r].data_ptr<double>() + l.size(1));
  }
  if (!token_ && labels_.size() == 2) {
    at::Tensor p1 = at::softmax(lg, -1).select(-1, 1).to(at::kCPU, at::kDouble).contiguous();
    auto& score = out.reals["score"];
    score.insert(score.end(), p1.data_ptr<double>(), p1.data_ptr<double>() + p1.numel());
  }
  return {sum.detach().to(at::kCPU), b.num_targets};
}

std::map<std::string, double> LsLlamaTask::metrics(const train::EvalRecords& all) {
  std::map<std::string, double> m;
  if (token_) {
    std::vector<std::vector<std::string>> gold, pred;
    auto names = [&](const std::vector<int32_t>& ids) {
      std::vector<std::string> v;
      for (int32_t id : ids) v.push_back(labels_.at(size_t(id)));
      return v;
    };
    const auto& gold_tags = all.seqs_of("gold_tags");
    const auto& pred_tags = all.seqs_of("pred_tags");
    for (size_t i = 0; i < gold_tags.size(); ++i) {
      gold.push_back(names(gold_tags[i]));
      pred.push_back(names(pred_tags[i]));
    }
    train::SpanCounts c = train::span_counts(gold, pred);
    train::PRF prf = train::span_prf(c);
    m["span_f1"] = prf.f1;
    m["span_precision"] = prf.precision;
    m["span_recall"] = prf.recall;
    m["tag_accuracy"] = train::tag_accuracy(c);
    m["sentences"] = double(gold.size());
  } else {
    const auto& pred = all.ints_of("pred");
    const auto& gold = all.ints_of("gold");
    const auto& score = all.reals_of("score");
    train::ClassCounts c = train::class_counts(pred, gold);
    m["accuracy"] = train::accuracy(pred, gold);
    m["macro_f1"] = train::macro_f1(c);
    if (labels_.size() == 2 && score.size() == gold.size()) m["auc"] = train::auc_roc(score, gold);
    m["examples"] = double(gold.size());
  }
  return m;
}

std::string LsLlamaTask::write_results(const train::EvalRecords& all, const std::string& dir) {
  const auto& logits = all.vecs_of("logits");
  if (logits.empty()) return "";
  // The head's logits (before softmax), full precision, so that a score can be checked against
  // another implementation: a row per eval example in store order, or per real token.
  std::string f = token_ ? "example\tposition\ttoken\tgold\tpred" : "example\tgold\tpred";
  for (const auto& l : labels_) f += "\tlogit_" + l;
  f += "\n";
  const size_t L = labels_.size();
  auto row = [&](const double* l) {
    size_t best = 0;
    for (size_t k = 1; k < L; ++k)
      if (l[k] > l[best]) best = k;
    std::string s = "\t" + labels_[best];
    for (size_t k = 0; k < L; ++k) s += fmt::format("\t{:.9g}", l[k]);
    return s + "\n";
  };
  for (size_t i = 0; i < logits.size(); ++i) {
    if (token_) {
      const auto& ids = all.seqs_of("token_ids")[i];
      const auto& gold = all.seqs_of("token_gold")[i];
      for (size_t t = 0; t < ids.size(); ++t)
        f += fmt::format("{}\t{}\t{}\t{}", all.example[i], t, ids[t], gold[t] < 0 ? "-" : labels_.at(size_t(gold[t]))) +
             row(&logits[i][t * L]);
    } else {
      f += fmt::format("{}\t{}", all.example[i], labels_.at(size_t(all.ints_of("gold")[i]))) + row(logits[i].data());
    }
  }
  write_file_atomic((std::filesystem::path(dir) / "predictions.tsv").string(), f);
  return token_ ? "The head's logits for every token of every example are in predictions.tsv.\n"
                : "The prediction and the head's logits for every example are in predictions.tsv.\n";
}

void LsLlamaTask::export_adapter(const std::string& dir) {
  if (!model::has_lora(model_)) input_error("lora.enabled is false: there is no adapter to export (use --merged)");
  model::AdapterExport o;
  o.task_type = token_ ? "TOKEN_CLS" : "SEQ_CLS";
  for (auto& [name, p] : head_params()) o.extra.emplace_back(name, p.detach());
  model::export_adapter(model_, dir, o);
  write_model_code(dir, hf_);
}

void LsLlamaTask::export_merged(const std::string& dir) {
  model::MergedHead h;
  h.architecture = token_ ? "LlamaForTokenClassification" : "LlamaForSequenceClassification";
  h.labels = labels_;
  for (auto& [name, p] : head_params()) h.tensors.emplace_back(name, p.detach());
  model::export_merged(model_, dir, h);
  configure_merged(dir, hf_);
}

train::ExportUse LsLlamaTask::export_use(const train::ExportTarget& t) const {
  return {python_load(hf_, t.merged), /*encode=*/true, python_example(hf_, pad_id_), ""};
}

}  // namespace kiln::methods::ls_llama
