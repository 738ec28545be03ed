#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/config.h"
#include "core/error.h"
#include "core/recipe.h"

namespace fs = std::filesystem;
using namespace kiln;

namespace {

class RecipeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kiln_recipe_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    auto p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  // The message of the InputError that reading `path` throws, or "" when it does not throw.
  std::string error_of(const std::string& path, const std::vector<std::string>& overrides = {}) {
    try {
      read_recipe(path, overrides);
    } catch (const InputError& e) {
      EXPECT_EQ(e.exit_code(), 2);
      return e.what();
    }
    return "";
  }
  fs::path dir_;
};

const char* kBase =
    "model:\n"
    "  path: model\n"
    "train:\n"
    "  lr: 1.0e-4\n"
    "  max_steps: 10\n";

}  // namespace

TEST_F(RecipeTest, ReadsTypedValuesAndDefaults) {
  auto p = write("r.yaml", kBase);
  Recipe r = read_recipe(p, {});
  EXPECT_EQ(r.name, "r");
  EXPECT_DOUBLE_EQ(r.train.lr, 1e-4);
  EXPECT_EQ(r.train.max_steps, 10);
  EXPECT_EQ(r.train.micro_batch, 8);  // default
  EXPECT_EQ(r.model.path, (dir_ / "model").string());  // relative to the recipe file
  EXPECT_EQ(r.lora.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  // The resolved tree has the defaults written in and reloads to the same values.
  auto saved = write("saved.yaml", recipe::to_yaml(r.tree));
  Recipe again = read_recipe(saved, {});
  EXPECT_EQ(again.model.path, r.model.path);
  EXPECT_EQ(again.train.micro_batch, 8);
  EXPECT_EQ(again.checkpoint.run_dir, r.checkpoint.run_dir);
  EXPECT_EQ(again.name, "r");
}

TEST_F(RecipeTest, ExtendsMergesAndOverridesWin) {
  write("base.yaml", std::string(kBase) + "lora:\n  r: 4\n  alpha: 8\n");
  auto child = write("child.yaml", "extends: base.yaml\ntrain:\n  max_steps: 20\nlora:\n  r: 16\n");
  Recipe r = read_recipe(child, {"train.lr=2e-4", "data.max_len=128", "lora.target_modules=[q_proj,k_proj]"});
  EXPECT_EQ(r.train.max_steps, 20);   // child beats base
  EXPECT_DOUBLE_EQ(r.train.lr, 2e-4);  // override beats both
  EXPECT_EQ(r.data.max_len, 128);
  EXPECT_EQ(r.lora.r, 16);
  EXPECT_DOUBLE_EQ(r.lora.alpha, 8);  // kept from base
  EXPECT_EQ(r.lora.target_modules, (std::vector<std::string>{"q_proj", "k_proj"}));
}

TEST_F(RecipeTest, UnknownKeySuggestsNearest) {
  auto p = write("r.yaml", std::string(kBase) + "  warmup_step: 5\n");
  std::string msg = error_of(p);
  EXPECT_NE(msg.find("r.yaml:6"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown key `train.warmup_step`"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean `train.warmup_steps`?"), std::string::npos) << msg;
}

TEST_F(RecipeTest, UnknownSectionSuggestsNearest) {
  auto p = write("r.yaml", std::string(kBase) + "trian:\n  lr: 1\n");
  std::string msg = error_of(p);
  EXPECT_NE(msg.find("unknown key `trian` (did you mean `train`?)"), std::string::npos) << msg;
}

TEST_F(RecipeTest, WrongTypeNamesKeyAndLine) {
  auto p = write("r.yaml", "model:\n  path: m\ntrain:\n  max_steps: ten\n");
  std::string msg = error_of(p);
  EXPECT_NE(msg.find("r.yaml:4: key `train.max_steps`: expected an integer, got `ten`"), std::string::npos) << msg;
  p = write("r2.yaml", "model:\n  path: m\ntrain:\n  lr: \"0.1\"\n");
  msg = error_of(p);
  EXPECT_NE(msg.find("r2.yaml:4: key `train.lr`: expected a number, got `0.1`"), std::string::npos) << msg;
  p = write("r3.yaml", "model:\n  path: m\nlora:\n  enabled: maybe\n");
  msg = error_of(p);
  EXPECT_NE(msg.find("r3.yaml:4: key `lora.enabled`: expected true or false"), std::string::npos) << msg;
  p = write("r4.yaml", "model:\n  path: m\ntrain: 5\n");
  msg = error_of(p);
  EXPECT_NE(msg.find("r4.yaml:3: key `train`: expected a section"), std::string::npos) << msg;
}

TEST_F(RecipeTest, OutOfRangeNamesKeyAndLine) {
  auto p = write("r.yaml", "model:\n  path: m\nlora:\n  dropout: 1.5\n");
  std::string msg = error_of(p);
  EXPECT_NE(msg.find("r.yaml:4: key `lora.dropout`: 1.5 is out of range [0, 0.99]"), std::string::npos) << msg;
  p = write("r2.yaml", "model:\n  path: m\n  attention: bidirectonal\n");
  msg = error_of(p);
  EXPECT_NE(msg.find("r2.yaml:3: key `model.attention`: `bidirectonal` is not one of causal, bidirectional "
                     "(did you mean `bidirectional`?)"),
            std::string::npos)
      << msg;
}

TEST_F(RecipeTest, OverrideOutOfRangeNamesCommandLine) {
  auto p = write("r.yaml", kBase);
  std::string msg = error_of(p, {"train.micro_batch=0"});
  EXPECT_NE(msg.find("command line argument `train.micro_batch=0`: key `train.micro_batch`: 0 is out of range"),
            std::string::npos)
      << msg;
}

TEST_F(RecipeTest, CheckpointKeepZeroKeepsAllButNegativeIsRefused) {
  // The requeue tests keep every checkpoint to inspect them; a negative count is a typo.
  auto p = write("r.yaml", kBase);
  EXPECT_EQ(read_recipe(p, {"checkpoint.keep=0"}).checkpoint.keep, 0);
  std::string msg = error_of(p, {"checkpoint.keep=-1"});
  EXPECT_NE(msg.find("key `checkpoint.keep`: -1 is out of range [0, 1048576]"), std::string::npos) << msg;
}

TEST_F(RecipeTest, MissingRequiredKey) {
  auto p = write("r.yaml", "train:\n  lr: 0.1\n");
  std::string msg = error_of(p);
  EXPECT_NE(msg.find("key `model.path`: is required but missing"), std::string::npos) << msg;
}

TEST_F(RecipeTest, BadOverrideSyntax) {
  auto p = write("r.yaml", kBase);
  for (const char* bad : {"train.lr", "=5", "train..lr=1", "train.l r=1"}) {
    std::string msg = error_of(p, {bad});
    EXPECT_NE(msg.find(fmt::format("bad override `{}`", bad)), std::string::npos) << msg;
    EXPECT_NE(msg.find("expected key=value"), std::string::npos) << msg;
  }
  std::string msg = error_of(p, {"train.lr.x=1"});
  EXPECT_NE(msg.find("bad override `train.lr.x=1`: `lr` is not a section"), std::string::npos) << msg;
}

TEST_F(RecipeTest, MissingFiles) {
  std::string msg = error_of((dir_ / "nope.yaml").string());
  EXPECT_NE(msg.find("recipe file `" + (dir_ / "nope.yaml").string() + "` not found"), std::string::npos) << msg;
  auto p = write("child.yaml", "extends: missing_base.yaml\n");
  msg = error_of(p);
  EXPECT_NE(msg.find("child.yaml:1: extends `"), std::string::npos) << msg;
  EXPECT_NE(msg.find("which was not found"), std::string::npos) << msg;
}

TEST_F(RecipeTest, SyntaxErrorAndDuplicateKey) {
  auto p = write("r.yaml", "model:\n  path: [unclosed\n");
  std::string msg = error_of(p);
  EXPECT_NE(msg.find("r.yaml:"), std::string::npos);
  EXPECT_NE(msg.find("YAML syntax error"), std::string::npos) << msg;
  p = write("d.yaml", "model:\n  path: a\n  path: b\n");
  msg = error_of(p);
  EXPECT_NE(msg.find("d.yaml:3: key `path` appears twice"), std::string::npos) << msg;
}

TEST_F(RecipeTest, ExtendsCycleIsAnError) {
  write("a.yaml", "extends: b.yaml\n");
  auto b = write("b.yaml", "extends: a.yaml\n");
  std::string msg = error_of(b);
  EXPECT_NE(msg.find("cycle"), std::string::npos) << msg;
}

TEST_F(RecipeTest, EnvironmentVariablesInPaths) {
  auto p = write("r.yaml", "model:\n  path: ${KILN_TEST_MODEL_DIR:-/fallback/model}\n");
  ::unsetenv("KILN_TEST_MODEL_DIR");
  EXPECT_EQ(read_recipe(p, {}).model.path, "/fallback/model");
  ::setenv("KILN_TEST_MODEL_DIR", "/models/llama", 1);
  EXPECT_EQ(read_recipe(p, {}).model.path, "/models/llama");
  auto q = write("q.yaml", "model:\n  path: ${KILN_TEST_UNSET_VAR}/x\n");
  ::unsetenv("KILN_TEST_UNSET_VAR");
  std::string msg = error_of(q);
  EXPECT_NE(msg.find("q.yaml:2: key `model.path`: environment variable `KILN_TEST_UNSET_VAR` is not set"),
            std::string::npos)
      << msg;
}

TEST_F(RecipeTest, TaskSectionIsLeftToTheMethod) {
  auto p = write("r.yaml", std::string(kBase) + "task:\n  pooling: max\n  typo_key: 1\n");
  Recipe r = read_recipe(p, {});
  recipe::Section root = recipe::Section::root(r.tree);
  auto task = root.sub("task");
  EXPECT_EQ(task.get_choice("pooling", "last", {"last", "mean", "max"}), "max");
  try {
    task.finish();
    FAIL() << "expected an unknown-key error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown key `task.typo_key`"), std::string::npos) << e.what();
  }
}

TEST(EditDistance, Basics) {
  EXPECT_EQ(recipe::edit_distance("", "abc"), 3u);
  EXPECT_EQ(recipe::edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(recipe::edit_distance("lr", "lr"), 0u);
}
