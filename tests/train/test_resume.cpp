// Exact resume: 2k steps in one run equal k steps, a stop (a real SIGTERM, raised on the last rank
// only: every rank must stop after the same step), a resume and k more steps, in losses and final
// weights, bit for bit on CPU. Runs as 1 rank and under mpirun -np 2 (same source, two tests).
// Also: `resume: auto` falls back past a corrupt newest checkpoint, and the run directory holds what
// docs/train.md says.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/world.h"
#include "toy_task.h"
#include "train/checkpoint.h"
#include "train/tensorboard.h"
#include "train/trainer.h"

using namespace kiln;
namespace fs = std::filesystem;

namespace {
struct Env {
  parallel::World& world = parallel::World::get();
  std::unique_ptr<parallel::Communicator> comm;
  Env() {
    world.configure_threads(1);
    comm = parallel::make_communicator(DistConfig{}, world);
  }
};
Env& env() {
  static Env e;
  return e;
}

std::string fresh_dir(const std::string& name) {
  auto& e = env();
  std::string d = fmt::format("{}/kiln_test_resume_np{}_{}", fs::temp_directory_path().string(), e.world.size(), name);
  if (e.world.is_root()) fs::remove_all(d);
  e.comm->barrier();
  return d;
}

struct Outcome {
  train::FitResult fit;
  std::vector<at::Tensor> weights;
  std::map<std::string, double> eval;
};

Outcome run(Recipe r, int64_t stop_in_step = 0) {
  auto& e = env();
  test::ToyTask task;
  task.build(r, e.world, *e.comm);
  task.accumulation = r.train.global_batch / (r.train.micro_batch * e.world.size());
  if (e.world.rank() == e.world.size() - 1) task.stop_in_step = stop_in_step;
  train::Trainer trainer(r, task, e.world, *e.comm);
  Outcome o;
  o.fit = trainer.fit();
  for (auto& [n, p] : task.trainable()) o.weights.push_back(p.detach().clone());
  o.eval = o.fit.eval;
  return o;
}

void expect_identical(const Outcome& a, const std::vector<double>& losses, const Outcome& b) {
  ASSERT_EQ(a.fit.losses.size(), losses.size());
  for (size_t i = 0; i < losses.size(); ++i) EXPECT_EQ(a.fit.losses[i], losses[i]) << "step " << i + 1;
  ASSERT_EQ(a.weights.size(), b.weights.size());
  for (size_t i = 0; i < a.weights.size(); ++i) EXPECT_TRUE(at::equal(a.weights[i], b.weights[i])) << "weight " << i;
  EXPECT_EQ(a.eval, b.eval);
}
}  // namespace

TEST(Resume, StopAndResumeEqualsUnbrokenRun) {
  Recipe r = test::toy_recipe(fresh_dir("unbroken"));
  Outcome whole = run(r);
  ASSERT_EQ(whole.fit.step, 8);
  ASSERT_FALSE(whole.fit.preempted);
  // It trains: the weights moved away from the initial ones.
  test::ToyTask fresh;
  fresh.build(r, env().world, *env().comm);
  EXPECT_FALSE(at::equal(fresh.trainable()[1].second, whole.weights[1]));

  Recipe s = test::toy_recipe(fresh_dir("stopped"));
  Outcome first = run(s, /*stop_in_step=*/3);
  EXPECT_TRUE(first.fit.preempted);
  EXPECT_EQ(first.fit.step, 3);
  EXPECT_TRUE(fs::exists(first.fit.last_checkpoint)) << first.fit.last_checkpoint;

  s.checkpoint.resume = "auto";
  Outcome second = run(s);
  EXPECT_EQ(second.fit.resumed_from, 3);
  EXPECT_FALSE(second.fit.preempted);
  std::vector<double> losses = first.fit.losses;
  losses.insert(losses.end(), second.fit.losses.begin(), second.fit.losses.end());
  expect_identical(whole, losses, second);

  // metrics.jsonl of the resumed run reads like the unbroken one: one train line per step.
  if (env().world.is_root()) {
    std::ifstream in(s.checkpoint.run_dir + "/metrics.jsonl");
    std::string line;
    std::vector<int64_t> steps;
    std::vector<double> seen;  // tokens trained on: counted on from the checkpoint, never restarted
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      if (j["split"] == "train") steps.push_back(j["step"].get<int64_t>()), seen.push_back(j["tokens_seen"].get<double>());
    }
    EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
    ASSERT_EQ(seen.size(), 8u);
    for (size_t i = 1; i < seen.size(); ++i) EXPECT_GT(seen[i], seen[i - 1]) << "step " << i + 1;
    auto results = nlohmann::json::parse(std::ifstream(s.checkpoint.run_dir + "/results.json"));
    EXPECT_EQ(results["tokens_seen"].get<double>(), seen.back());
    EXPECT_EQ(results["resumed_from"].get<int64_t>(), 3);
    EXPECT_TRUE(fs::exists(s.checkpoint.run_dir + "/recipe.yaml"));
    EXPECT_TRUE(fs::exists(s.checkpoint.run_dir + "/results.json"));
    int scalars = 0;
    for (auto& f : fs::directory_iterator(s.checkpoint.run_dir + "/tb"))
      scalars += int(train::read_events(f.path().string()).scalars.size());
    EXPECT_EQ(scalars, 8 * 6 + 6);  // loss, lr, grad_norm, tokens, tokens_seen, epoch a step; 6 eval metrics at the end
  }
}

TEST(Resume, AutoFallsBackPastACorruptCheckpoint) {
  Recipe r = test::toy_recipe(fresh_dir("unbroken2"));
  Outcome whole = run(r);

  Recipe s = test::toy_recipe(fresh_dir("fallback"));
  s.checkpoint.every = 2;
  s.checkpoint.keep = 2;
  Outcome first = run(s, /*stop_in_step=*/5);  // checkpoints at 2, 4, then 5 on the signal; keep 2: 4, 5
  ASSERT_TRUE(first.fit.preempted);
  std::string dir = s.checkpoint.run_dir + "/checkpoints";
  auto all = train::list_checkpoints(dir);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 4);
  EXPECT_EQ(all[1].first, 5);
  env().comm->barrier();
  if (env().world.is_root()) fs::resize_file(all[1].second, fs::file_size(all[1].second) / 2);  // a torn write
  env().comm->barrier();

  s.checkpoint.resume = "auto";
  Outcome second = run(s);
  EXPECT_EQ(second.fit.resumed_from, 4);
  std::vector<double> losses(first.fit.losses.begin(), first.fit.losses.begin() + 4);
  losses.insert(losses.end(), second.fit.losses.begin(), second.fit.losses.end());
  expect_identical(whole, losses, second);

  // An explicit path to a corrupt file is an error, not a fallback.
  if (env().world.is_root()) fs::resize_file(train::list_checkpoints(dir).back().second, 100);
  env().comm->barrier();
  s.checkpoint.resume = train::list_checkpoints(dir).back().second;
  try {
    run(s);
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos) << e.what();
  }
}

TEST(Resume, GlobalBatchMismatchIsAnInputError) {
  Recipe s = test::toy_recipe(fresh_dir("mismatch"));
  run(s, 2);
  s.checkpoint.resume = "auto";
  s.train.global_batch = 2 * 16;  // toy_recipe trains with 16: a multiple of 4 x ranks, but not 16
  EXPECT_THROW(run(s), InputError);
}

// Evaluation and export load the weights alone: a checkpoint trained with another global batch
// (e.g. on another number of ranks) loads, where continuing its training is refused.
TEST(Resume, WeightsOnlyLoadIgnoresTheGlobalBatch) {
  auto& e = env();
  Recipe s = test::toy_recipe(fresh_dir("weights-only"));
  Outcome trained = run(s);
  std::string path = trained.fit.last_checkpoint;
  ASSERT_FALSE(path.empty());
  Recipe other = s;
  other.train.global_batch = 0;  // micro_batch x ranks: not the 16 it was trained with
  test::ToyTask task;
  task.build(other, e.world, *e.comm);
  train::Trainer trainer(other, task, e.world, *e.comm);
  EXPECT_THROW(trainer.load_checkpoint(path), InputError);
  trainer.load_checkpoint(path, /*weights_only=*/true);
  EXPECT_EQ(trainer.step(), 8);
  auto weights = task.trainable();
  ASSERT_EQ(weights.size(), trained.weights.size());
  for (size_t i = 0; i < weights.size(); ++i) EXPECT_TRUE(at::equal(weights[i].second, trained.weights[i])) << i;
}

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
}  // namespace

TEST(Resume, RerunningAFinishedRunEvaluatesAndRewritesNothing) {
  Recipe r = test::toy_recipe(fresh_dir("finished"));
  Outcome first = run(r);
  env().comm->barrier();  // rank 0 writes results.md after the last collective of fit()
  const std::string dir = r.checkpoint.run_dir;
  std::map<std::string, std::string> before;
  for (auto& f : fs::recursive_directory_iterator(dir))
    if (f.is_regular_file()) before[f.path().string()] = slurp(f.path().string());
  env().comm->barrier();

  r.checkpoint.resume = "auto";
  Outcome again = run(r);
  EXPECT_TRUE(again.fit.already_complete);
  EXPECT_TRUE(again.fit.losses.empty());
  EXPECT_EQ(again.eval, first.eval);  // the same weights evaluate to the same metrics
  env().comm->barrier();
  std::map<std::string, std::string> after;
  for (auto& f : fs::recursive_directory_iterator(dir))
    if (f.is_regular_file()) after[f.path().string()] = slurp(f.path().string());
  EXPECT_EQ(before.size(), after.size());
  for (auto& [path, bytes] : before) EXPECT_TRUE(after[path] == bytes) << path << " was rewritten";
}

TEST(Resume, StartingOverInADirectoryWithCheckpointsIsRefused) {
  Recipe r = test::toy_recipe(fresh_dir("occupied"));
  run(r, 2);
  env().comm->barrier();
  const auto kept = train::list_checkpoints(r.checkpoint.run_dir + "/checkpoints");
  ASSERT_FALSE(kept.empty());
  r.checkpoint.resume = "none";
  try {
    run(r);
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("holds the checkpoints of an earlier run"), std::string::npos) << e.what();
  }
  EXPECT_EQ(train::list_checkpoints(r.checkpoint.run_dir + "/checkpoints"), kept);  // untouched
}

// Resuming from an older checkpoint of the same run would write over the newer ones: refused unless
// checkpoint.rewind, which moves the newer checkpoints, results and metrics aside and deletes
// nothing; the rewound run then equals an unbroken one.
TEST(Resume, RewindingIsRefusedUnlessAskedAndMovesTheNewerRunAside) {
  Recipe r = test::toy_recipe(fresh_dir("rewind"));
  r.checkpoint.every = 2;
  r.checkpoint.keep = 0;
  Outcome whole = run(r);
  env().comm->barrier();
  const std::string dir = r.checkpoint.run_dir;
  const auto before = train::list_checkpoints(dir + "/checkpoints");
  ASSERT_EQ(before.size(), 4u);  // 2, 4, 6, 8
  const std::string results = slurp(dir + "/results.md");
  ASSERT_FALSE(results.empty());

  r.checkpoint.resume = before[1].second;  // step 4
  try {
    run(r);
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint.rewind=true"), std::string::npos) << e.what();
  }
  EXPECT_EQ(train::list_checkpoints(dir + "/checkpoints"), before);  // untouched

  r.checkpoint.rewind = true;
  Outcome again = run(r);
  EXPECT_EQ(again.fit.resumed_from, 4);
  std::vector<double> losses(whole.fit.losses.begin(), whole.fit.losses.begin() + 4);
  losses.insert(losses.end(), again.fit.losses.begin(), again.fit.losses.end());
  expect_identical(whole, losses, again);
  env().comm->barrier();
  // The newer checkpoints and the first run's results are kept under rewound-*/.
  std::vector<fs::path> aside;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("rewound-", 0) == 0) aside.push_back(e.path());
  ASSERT_EQ(aside.size(), 1u);
  for (int64_t s : {6, 8}) EXPECT_TRUE(fs::exists(aside[0] / "checkpoints" / train::checkpoint_name(s))) << s;
  EXPECT_EQ(slurp((aside[0] / "results.md").string()), results);
  EXPECT_TRUE(fs::exists(aside[0] / "metrics.jsonl"));
}
