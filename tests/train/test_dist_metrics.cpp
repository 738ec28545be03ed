// Distributed metrics equal single-process metrics on the same predictions: records split over the
// ranks (interleaved, so the gather must restore the order) and gathered give exactly the metrics
// of the whole set computed in one process. Also Trainer::evaluate against a local evaluation.
#include <gtest/gtest.h>

#include <random>

#include "dist/communicator.h"
#include "dist/world.h"
#include "toy_task.h"
#include "train/metrics.h"
#include "train/trainer.h"

using namespace kiln;

namespace {
dist::Communicator& comm() {
  static auto c = [] {
    dist::World::get().configure_threads(1);
    return dist::make_communicator(DistConfig{}, dist::World::get());
  }();
  return *c;
}

train::EvalRecords synthetic(int n) {
  std::mt19937 g(11);
  train::EvalRecords r;
  for (int i = 0; i < n; ++i) {
    r.example.push_back(i);
    r.gold.push_back(int64_t(g() % 4));
    r.pred.push_back(g() % 3 == 0 ? int64_t(g() % 4) : r.gold.back());
    r.score.push_back(double(g() % 5) / 4.0);  // five distinct values: many ties
    std::vector<int32_t> gs, ps;
    int len = 1 + int(g() % 9);
    for (int t = 0; t < len; ++t) {
      gs.push_back(int32_t(g() % 5));  // O, B-PER, I-PER, B-LOC, I-LOC ... as IOB1 strings below
      ps.push_back(g() % 4 == 0 ? int32_t(g() % 5) : gs.back());
    }
    r.gold_seq.push_back(gs);
    r.pred_seq.push_back(ps);
  }
  r.loss_sum = 0;
  return r;
}

std::map<std::string, double> all_metrics(const train::EvalRecords& r) {
  static const char* names[] = {"O", "I-PER", "I-LOC", "B-LOC", "I-MISC"};  // IOB1
  std::vector<std::vector<std::string>> g, p;
  for (size_t i = 0; i < r.gold_seq.size(); ++i) {
    g.emplace_back();
    p.emplace_back();
    for (auto t : r.gold_seq[i]) g.back().push_back(names[t]);
    for (auto t : r.pred_seq[i]) p.back().push_back(names[t]);
  }
  auto c = train::class_counts(r.pred, r.gold);
  std::vector<int64_t> bin;
  for (auto x : r.gold) bin.push_back(x == 1);
  auto s = train::span_counts(g, p);
  return {{"accuracy", train::accuracy(r.pred, r.gold)}, {"macro_f1", train::macro_f1(c)},
          {"micro_f1", train::micro_f1(c)},             {"auc", train::auc_roc(r.score, bin)},
          {"span_f1", train::span_prf(s).f1},           {"span_p", train::span_prf(s).precision},
          {"tag_acc", train::tag_accuracy(s)}};
}
}  // namespace

TEST(DistMetrics, GatheredEqualsSingleProcess) {
  auto& c = comm();
  auto whole = synthetic(257);
  train::EvalRecords mine;
  for (int64_t i = c.rank(); i < whole.size(); i += c.size()) {
    mine.example.push_back(whole.example[size_t(i)]);
    mine.pred.push_back(whole.pred[size_t(i)]);
    mine.gold.push_back(whole.gold[size_t(i)]);
    mine.score.push_back(whole.score[size_t(i)]);
    mine.gold_seq.push_back(whole.gold_seq[size_t(i)]);
    mine.pred_seq.push_back(whole.pred_seq[size_t(i)]);
  }
  auto gathered = train::gather_records(mine, c);
  EXPECT_EQ(gathered.example, whole.example);
  EXPECT_EQ(gathered.pred_seq, whole.pred_seq);
  EXPECT_EQ(all_metrics(gathered), all_metrics(whole));  // exactly, not approximately

  // The wrong way, for contrast: the mean of per-rank macro F1 is not the macro F1 of the whole set.
  if (c.size() > 1) {
    at::Tensor f = at::tensor({all_metrics(mine)["macro_f1"] / c.size()}, at::kDouble);
    c.all_reduce(f, dist::ReduceOp::Sum);
    EXPECT_NE(f.item<double>(), all_metrics(whole)["macro_f1"]);
  }
}

TEST(DistMetrics, TrainerEvaluateEqualsLocalEvaluation) {
  auto& c = comm();
  auto& world = dist::World::get();
  Recipe r = test::toy_recipe("/tmp/unused");
  test::ToyTask task;
  task.build(r, world);
  train::Trainer trainer(r, task, world, c);
  auto dist_metrics = trainer.evaluate();

  // The same model evaluated on every example by this process alone, in the same micro-batches.
  task.set_training(false);
  train::EvalRecords local;
  at::NoGradGuard ng;
  for (int64_t b = 0; b < task.size(methods::Split::eval); b += r.train.micro_batch) {
    std::vector<int64_t> idx;
    for (int64_t i = b; i < std::min(task.size(methods::Split::eval), b + r.train.micro_batch); ++i) idx.push_back(i);
    auto ls = task.evaluate(task.collate(methods::Split::eval, idx), local);
    local.loss_sum += ls.sum.item<double>();
    local.loss_count += ls.targets;
  }
  auto want = task.metrics(local);
  for (auto& [k, v] : want) EXPECT_EQ(dist_metrics.at(k), v) << k;
  EXPECT_NEAR(dist_metrics.at("loss"), local.loss_sum / double(local.loss_count), 1e-12);
  EXPECT_EQ(trainer.last_records().example.size(), size_t(task.size(methods::Split::eval)));
}
