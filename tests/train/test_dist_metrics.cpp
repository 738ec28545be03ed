// Distributed metrics equal single-process metrics on the same predictions: records split over the
// ranks (interleaved, so the gather must restore the order) and gathered give exactly the metrics
// of the whole set computed in one process. Also Trainer::evaluate against a local evaluation.
#include <gtest/gtest.h>

#include <random>

#include "parallel/communicator.h"
#include "parallel/world.h"
#include "toy_task.h"
#include "train/metrics.h"
#include "train/trainer.h"

using namespace kiln;

namespace {
parallel::Communicator& comm() {
  static auto c = [] {
    parallel::World::get().configure_threads(1);
    return parallel::make_communicator(DistConfig{}, parallel::World::get());
  }();
  return *c;
}

train::EvalRecords synthetic(int n) {
  std::mt19937 g(11);
  train::EvalRecords r;
  for (int i = 0; i < n; ++i) {
    r.example.push_back(i);
    r.ints["gold"].push_back(int64_t(g() % 4));
    r.ints["pred"].push_back(g() % 3 == 0 ? int64_t(g() % 4) : r.ints["gold"].back());
    r.reals["score"].push_back(double(g() % 5) / 4.0);  // five distinct values: many ties
    std::vector<int32_t> gs, ps;
    int len = 1 + int(g() % 9);
    for (int t = 0; t < len; ++t) {
      gs.push_back(int32_t(g() % 5));  // O, B-PER, I-PER, B-LOC, I-LOC ... as IOB1 strings below
      ps.push_back(g() % 4 == 0 ? int32_t(g() % 5) : gs.back());
    }
    r.seqs["gold_tags"].push_back(gs);
    r.seqs["pred_tags"].push_back(ps);
  }
  r.loss_sum = 0;
  return r;
}

std::map<std::string, double> all_metrics(const train::EvalRecords& r) {
  static const char* names[] = {"O", "I-PER", "I-LOC", "B-LOC", "I-MISC"};  // IOB1
  std::vector<std::vector<std::string>> g, p;
  for (size_t i = 0; i < r.seqs_of("gold_tags").size(); ++i) {
    g.emplace_back();
    p.emplace_back();
    for (auto t : r.seqs_of("gold_tags")[i]) g.back().push_back(names[t]);
    for (auto t : r.seqs_of("pred_tags")[i]) p.back().push_back(names[t]);
  }
  auto c = train::class_counts(r.ints_of("pred"), r.ints_of("gold"));
  std::vector<int64_t> bin;
  for (auto x : r.ints_of("gold")) bin.push_back(x == 1);
  auto s = train::span_counts(g, p);
  return {{"accuracy", train::accuracy(r.ints_of("pred"), r.ints_of("gold"))}, {"macro_f1", train::macro_f1(c)},
          {"micro_f1", train::micro_f1(c)},             {"auc", train::auc_roc(r.reals_of("score"), bin)},
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
    mine.ints["pred"].push_back(whole.ints["pred"][size_t(i)]);
    mine.ints["gold"].push_back(whole.ints["gold"][size_t(i)]);
    mine.reals["score"].push_back(whole.reals["score"][size_t(i)]);
    mine.seqs["gold_tags"].push_back(whole.seqs["gold_tags"][size_t(i)]);
    mine.seqs["pred_tags"].push_back(whole.seqs["pred_tags"][size_t(i)]);
  }
  auto gathered = train::gather_records(mine, c);
  EXPECT_EQ(gathered.example, whole.example);
  EXPECT_EQ(gathered.seqs, whole.seqs);
  EXPECT_EQ(gathered.ints, whole.ints);
  EXPECT_EQ(all_metrics(gathered), all_metrics(whole));  // exactly, not approximately

  // The wrong way, for contrast: the mean of per-rank macro F1 is not the macro F1 of the whole set.
  if (c.size() > 1) {
    at::Tensor f = at::tensor({all_metrics(mine)["macro_f1"] / c.size()}, at::kDouble);
    c.all_reduce(f, parallel::ReduceOp::Sum);
    EXPECT_NE(f.item<double>(), all_metrics(whole)["macro_f1"]);
  }
}

TEST(DistMetrics, TrainerEvaluateEqualsLocalEvaluation) {
  auto& c = comm();
  auto& world = parallel::World::get();
  Recipe r = test::toy_recipe("/tmp/unused");
  test::ToyTask task;
  task.build(r, world, c);
  train::Trainer trainer(r, task, world, c);
  auto dist_metrics = trainer.evaluate();

  // The same model evaluated on every example by this process alone, in the same micro-batches.
  task.set_training(false);
  train::EvalRecords local;
  at::NoGradGuard ng;
  for (int64_t b = 0; b < task.size(train::Split::eval); b += r.train.micro_batch) {
    std::vector<int64_t> idx;
    for (int64_t i = b; i < std::min(task.size(train::Split::eval), b + r.train.micro_batch); ++i) idx.push_back(i);
    auto ls = task.evaluate(task.collate(train::Split::eval, idx), local);
    local.loss_sum += ls.sum.item<double>();
    local.loss_count += ls.targets;
  }
  auto want = task.metrics(local);
  for (auto& [k, v] : want) EXPECT_EQ(dist_metrics.at(k), v) << k;
  EXPECT_NEAR(dist_metrics.at("loss"), local.loss_sum / double(local.loss_count), 1e-12);
  EXPECT_EQ(trainer.last_records().example.size(), size_t(task.size(train::Split::eval)));
}
