#include "methods/regress/regress.h"

#include <cmath>
#include <cstdlib>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "methods/registry.h"
#include "model/hf_io.h"
#include "model/lora.h"
#include "model/pooling.h"
#include "parallel/world.h"

namespace kiln::methods::regress {

KILN_REGISTER_TASK("regress", "a number per text: mean-pooled hidden states into a linear head, squared error",
                   RegressTask);

namespace {

class TargetEncoder : public data::Encoder {
 public:
  std::string kind() const override { return "regression"; }
  std::vector<data::Field> fields() const override { return {{"target", data::DType::f32, data::Per::example}}; }
  void check(const DataConfig& c) const override {
    if (c.format != "tsv" && c.format != "csv" && c.format != "sst" && c.format != "jsonl")
      input_error("key `data.format`: method regress reads a number per text (tsv, csv, sst, jsonl), not `{}`",
                  c.format);
  }
  void encode(const data::Record& rec, const data::EncodeContext& ctx, data::Example& out) const override {
    char* end = nullptr;
    double v = std::strtod(rec.label.c_str(), &end);
    if (rec.label.empty() || end != rec.label.c_str() + rec.label.size() || !std::isfinite(v))
      input_error("{}: label `{}` is not a number (method regress)", rec.where(), shorten(rec.label, 40));
    out.ids = ctx.tok.encode(rec.text, true);
    if (!rec.text_pair.empty()) {
      auto p = ctx.tok.encode(rec.text_pair, false);
      out.ids.insert(out.ids.end(), p.begin(), p.end());
    }
    out.put<float>("target").push_back(float(v));
  }
};

}  // namespace

std::unique_ptr<data::Encoder> make_encoder() { return std::make_unique<TargetEncoder>(); }

void RegressTask::build(Recipe& r, parallel::World& world, parallel::Communicator& comm) {
  recipe::Section task = recipe::Section::root(r.tree).sub("task");
  const double init_std = task.get_double("head_init_std", 0.02, 0.0, 1.0);
  task.finish();
  device_ = world.device();
  model_ = model::load_pretrained(r.model, device_);
  model::apply_lora(model_, r.lora, r.model.freeze);
  open_stores(r, model::load_tokenizer(r.model.path), comm);
  head_ = torch::nn::Linear(model_->config().hidden_size, 1);
  {
    at::NoGradGuard ng;
    head_->weight.normal_(0, init_std);
    head_->bias.zero_();
  }
  head_->to(device_);
  log::info("regress: {} train / {} eval examples; {} trainable tensors", stores_.size(train::Split::train),
            stores_.size(train::Split::eval), trainable().size());
}

train::NamedTensors RegressTask::trainable() {
  train::NamedTensors out = model::trainable_parameters(model_);
  out.emplace_back("score.weight", head_->weight);
  out.emplace_back("score.bias", head_->bias);
  return out;
}

void RegressTask::set_training(bool on) {
  model_->train(on);
  head_->train(on);
}

at::Tensor RegressTask::predict(const data::Batch& b) {
  const at::Tensor& mask = b["attention_mask"];
  at::Tensor hidden = model_->hidden_states(b["input_ids"], mask);  // [B, T, H]
  return head_->forward(model::pool(hidden, mask, model::Pooling::mean)).squeeze(-1).to(at::kFloat);
}

train::LossSum RegressTask::loss(const data::Batch& b) {
  at::Tensor err = predict(b) - b["target"];
  return {err.pow(2).sum(), b.num_targets};
}

train::LossSum RegressTask::evaluate(const data::Batch& b, train::EvalRecords& out) {
  at::Tensor pred = predict(b).to(at::kCPU, at::kDouble);
  at::Tensor gold = b["target"].to(at::kCPU, at::kDouble);
  at::Tensor ex = b["example_index"].to(at::kCPU);
  for (int64_t r = 0; r < b.size(); ++r) {
    out.example.push_back(ex[r].item<int64_t>());
    out.reals["pred"].push_back(pred[r].item<double>());
    out.reals["gold"].push_back(gold[r].item<double>());
  }
  return {(pred - gold).pow(2).sum(), b.num_targets};
}

std::map<std::string, double> RegressTask::metrics(const train::EvalRecords& all) {
  const auto& p = all.reals_of("pred");
  const auto& g = all.reals_of("gold");
  const double n = double(p.size());
  double se = 0, ae = 0, mp = 0, mg = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    se += (p[i] - g[i]) * (p[i] - g[i]);
    ae += std::abs(p[i] - g[i]);
    mp += p[i] / n;
    mg += g[i] / n;
  }
  double cov = 0, vp = 0, vg = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    cov += (p[i] - mp) * (g[i] - mg);
    vp += (p[i] - mp) * (p[i] - mp);
    vg += (g[i] - mg) * (g[i] - mg);
  }
  return {{"mse", se / n}, {"mae", ae / n}, {"pearson", vp > 0 && vg > 0 ? cov / std::sqrt(vp * vg) : 0.0},
          {"examples", n}};
}

void RegressTask::export_adapter(const std::string& dir) {
  if (!model::has_lora(model_)) input_error("lora.enabled is false: there is no adapter to export");
  model::AdapterExport o;
  o.task_type = "SEQ_CLS";
  o.extra = {{"score.weight", head_->weight.detach()}, {"score.bias", head_->bias.detach()}};
  model::export_adapter(model_, dir, o);
}

train::ExportUse RegressTask::export_use(const train::ExportTarget&) const {
  return {"", false, "",
          "the head reads the mean of the hidden states and has a bias; transformers' LlamaForSequenceClassification "
          "(num_labels 1) reads the last token's and has none"};
}

}  // namespace kiln::methods::regress
