// The worked example of docs/methods.md: the `regress` method's own store (a float per example),
// its errors, and a short training run that must learn a number the text determines.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "core/config.h"
#include "core/error.h"
#include "data/preprocess.h"
#include "data/store.h"
#include "data/tokenizer.h"
#include "methods/registry.h"
#include "parallel/communicator.h"
#include "parallel/world.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace kiln;

namespace {

const std::string kModel = std::string(KILN_SOURCE_DIR) + "/models/stories260K";

std::string temp_dir(const std::string& name) {
  auto d = fs::path(testing::TempDir()) / "kiln_regress" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

Recipe make_recipe(const std::string& dir, const std::string& extra) {
  std::string y = "name: t\nmethod: regress\nmodel:\n  path: " + kModel + "\ncheckpoint:\n  run_dir: " + dir +
                  "\n  export_adapter: false\nlog:\n  tensorboard: false\n" + extra;
  return read_recipe_tree(recipe::parse_string(y, "test.yaml"), "test.yaml");
}

// Sentences of `good` and `bad`, labelled 4 x the share of `good`: mean-pooled states carry it.
std::string make_tsv(const std::string& path, int n, uint32_t seed) {
  std::mt19937 g(seed);
  std::ofstream out(path);
  out << "sentence\tlabel\n";
  for (int i = 0; i < n; ++i) {
    int len = 2 + int(g() % 7), good = 0;
    std::string s;
    for (int k = 0; k < len; ++k) {
      bool gw = g() % 2;
      good += gw;
      s += std::string(k ? " " : "") + (gw ? "good" : "bad");
    }
    out << s << "\t" << 4.0 * good / len << "\n";
  }
  return path;
}

parallel::Communicator& comm() {
  static auto c = parallel::make_communicator(DistConfig{}, parallel::World::get());
  return *c;
}

}  // namespace

TEST(Regress, StoresAFloatPerExample) {
  std::string dir = temp_dir("store");
  std::string tsv = dir + "/t.tsv";
  std::ofstream(tsv) << "sentence\tlabel\nfine\t3.5\nawful\t-1\n";
  Recipe r = make_recipe(dir, "data:\n  format: tsv\n  train: " + tsv + "\n  store_dir: " + dir + "/data\n");
  auto enc = methods::make_task(r)->encoder(r);
  data::Tokenizer tok(kModel);
  data::preprocess(r, *enc, tok);
  data::Store s(dir + "/data/train.h5");
  EXPECT_EQ(s.kind(), "regression");
  ASSERT_EQ(s.size(), 2);
  EXPECT_FLOAT_EQ(s.value<float>("target", 0), 3.5f);
  EXPECT_FLOAT_EQ(s.value<float>("target", 1), -1.0f);
  EXPECT_EQ(s.field("target").dtype, data::DType::f32);
  EXPECT_EQ(s.ids(0).vec(), tok.encode("fine", true));
}

TEST(Regress, ANonNumberNamesItsLine) {
  std::string dir = temp_dir("bad");
  std::string tsv = dir + "/t.tsv";
  std::ofstream(tsv) << "sentence\tlabel\nfine\t3.5\nawful\tbad\n";
  Recipe r = make_recipe(dir, "data:\n  format: tsv\n  train: " + tsv + "\n  store_dir: " + dir + "/data\n");
  try {
    data::preprocess(r, *methods::make_task(r)->encoder(r), data::Tokenizer(kModel));
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(tsv + ":3: label `bad` is not a number"), std::string::npos) << e.what();
  }
  Recipe c = make_recipe(dir, "data:\n  format: conll\n  train: " + tsv + "\n");
  EXPECT_THROW(methods::make_task(c)->encoder(c)->check(c.data), InputError);
}

TEST(Regress, LearnsTheNumber) {
  std::string dir = temp_dir("train");
  std::string train = make_tsv(dir + "/train.tsv", 512, 1), eval = make_tsv(dir + "/eval.tsv", 128, 2);
  Recipe r = make_recipe(dir, "data:\n  format: tsv\n  train: " + train + "\n  eval: " + eval +
                             "\ntrain:\n  micro_batch: 16\n  max_steps: 96\n  lr: 3e-3\n  threads: 1\n"
                             "lora:\n  target_modules: [q_proj, v_proj]\n");
  auto task = methods::make_task(r);
  auto& world = parallel::World::get();
  task->build(r, world, comm());
  train::Trainer trainer(r, *task, world, comm());
  auto before = trainer.evaluate();
  auto res = trainer.fit();
  ASSERT_EQ(res.step, 96);
  // The base model knows nothing of the number; after training the error is a fraction of it and
  // the predictions follow the targets.
  EXPECT_LT(res.eval.at("mse"), 0.5 * before.at("mse")) << before.at("mse") << " -> " << res.eval.at("mse");
  EXPECT_GT(res.eval.at("pearson"), 0.8);
  EXPECT_EQ(res.eval.at("examples"), 128);
  EXPECT_TRUE(fs::exists(dir + "/results.json"));
}
