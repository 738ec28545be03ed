// FRACTAL's pieces against hand-computed values: the bag losses and their gradients on ragged bags
// (a bag of one among them), each prior, every pseudo-label rule, the PRM800K path reconstruction
// on the raw rows of a known problem, the readers, and the sentence AUC with ties.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "methods/fractal/bags.h"
#include "methods/fractal/losses.h"
#include "train/metrics.h"

using namespace kiln::methods::fractal;
namespace fs = std::filesystem;

namespace {

const std::string kData = std::string(KILN_SHARED_DIR) + "/data/";

// Two bags padded to 3 sentences: [0.5, -1, 2] and [1.5] (a bag of one). The padding holds
// logits that would win a max (or a min) if padding were not masked out exactly.
struct Bags {
  at::Tensor logits, mask, y;
  Bags(double pad) {
    logits = at::tensor({0.5, -1.0, 2.0, 1.5, pad, pad}, at::kDouble).view({2, 3}).requires_grad_(true);
    mask = at::tensor({1, 1, 1, 1, 0, 0}, at::kInt).to(at::kBool).view({2, 3});
    y = at::tensor({0.0, 1.0}, at::kDouble);
  }
  std::vector<double> grad() const {
    auto g = logits.grad().contiguous();
    return std::vector<double>(g.data_ptr<double>(), g.data_ptr<double>() + 6);
  }
};

void expect_near(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-9) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

std::vector<std::string> lines_of(const std::string& xz, int first, int last) {
  std::string cmd = "xz -dc '" + xz + "' | sed -n '" + std::to_string(first) + "," + std::to_string(last) + "p'";
  FILE* f = popen(cmd.c_str(), "r");
  std::vector<std::string> out;
  std::string cur;
  for (int c; (c = fgetc(f)) != EOF;) {
    if (c == '\n') out.push_back(cur), cur.clear();
    else cur += char(c);
  }
  pclose(f);
  return out;
}

}  // namespace

TEST(FractalLoss, MaxIsExactOverRealSentences) {
  Bags b(50.0);
  at::Tensor l = bag_loss(b.logits, b.mask, b.y, Aggregation::max);
  // bag 0: y=0, max logit 2: softplus(2); bag 1: y=1, logit 1.5: softplus(-1.5).
  EXPECT_NEAR(l.item<double>(), 2.328341289025725, 1e-9);
  l.backward();
  // Only each bag's maximum gets a gradient: sigmoid(2) and -sigmoid(-1.5); padding none.
  expect_near(b.grad(), {0, 0, 0.8807970779778823, -0.18242552380635635, 0, 0});
}

TEST(FractalLoss, MinIsExactOverRealSentences) {
  Bags b(-50.0);
  at::Tensor l = bag_loss(b.logits, b.mask, b.y, Aggregation::min);
  EXPECT_NEAR(l.item<double>(), 0.5146749655009754, 1e-9);  // softplus(-1) + softplus(-1.5)
  l.backward();
  expect_near(b.grad(), {0, 0.2689414213699951, 0, -0.18242552380635635, 0, 0});
}

TEST(FractalLoss, AvgOfProbabilities) {
  Bags b(50.0);
  at::Tensor l = bag_loss(b.logits, b.mask, b.y, Aggregation::avg);
  // bag 0: -log(1 - mean(sigmoid(0.5), sigmoid(-1), sigmoid(2))); bag 1: -log(sigmoid(1.5)).
  EXPECT_NEAR(l.item<double>(), 1.094799849700076, 1e-9);
  l.backward();
  expect_near(b.grad(), {0.19140193595423782, 0.16013323492457435, 0.0855134385782329, -0.18242552380635635, 0, 0});
  // The bag probability the metrics use agrees with the loss's.
  at::Tensor p = bag_probability(b.logits.detach(), b.mask, Aggregation::max);
  EXPECT_NEAR(p[0].item<double>(), 0.8807970779778823, 1e-12);
}

TEST(FractalPrior, Cosine) {
  // Context [1, 0]; sentence 1 along it (s = 1), sentence 2 orthogonal (s = 0.5); p = 0.5 for both:
  // (BCE(1, 0.5) + BCE(0.5, 0.5)) / 2 = log 2.
  at::Tensor logits = at::zeros({1, 2}, at::kDouble);
  at::Tensor mask = at::ones({1, 2}, at::kBool);
  at::Tensor sent = at::tensor({1.0, 0.0, 0.0, 1.0}, at::kDouble).view({1, 2, 2});
  at::Tensor ctx = at::tensor({1.0, 0.0}, at::kDouble).view({1, 2});
  EXPECT_NEAR(cosine_prior(logits, mask, sent, ctx).item<double>(), std::log(2.0), 1e-12);
}

// Issue 32, point 6: google-deepmind/fractal_acl25 math_reasoning/model.py @ b567a1e takes
// tf.keras.losses.CosineSimilarity (the negative cosine) and forms (1 + that) / 2 = (1 - cos) / 2.
TEST(FractalPrior, CosineTargetOfTheOfficialCode) {
  // Context [1, 0]; sentence 1 along it (cos 1), sentence 2 orthogonal (cos 0, s = 0.5 either way).
  // Logits ln 3 (p = 0.75) and 0 (p = 0.5). one_minus: s1 = 0, BCE = -ln 0.25; one_plus: s1 = 1,
  // BCE = -ln 0.75; sentence 2 adds ln 2 in both; the bag's mean over its 2 sentences.
  at::Tensor logits = at::tensor({std::log(3.0), 0.0}, at::kDouble).view({1, 2});
  at::Tensor mask = at::ones({1, 2}, at::kBool);
  at::Tensor sent = at::tensor({2.0, 0.0, 0.0, 3.0}, at::kDouble).view({1, 2, 2});
  at::Tensor ctx = at::tensor({1.0, 0.0}, at::kDouble).view({1, 2});
  EXPECT_NEAR(cosine_prior(logits, mask, sent, ctx, CosTarget::one_minus).item<double>(),
              (-std::log(0.25) + std::log(2.0)) / 2, 1e-12);
  EXPECT_NEAR(cosine_prior(logits, mask, sent, ctx, CosTarget::one_plus).item<double>(),
              (-std::log(0.75) + std::log(2.0)) / 2, 1e-12);
  // Anti-parallel (cos -1): one_minus's target is 1, so p = 0.75 costs -ln 0.75.
  at::Tensor anti = at::tensor({-1.0, 0.0}, at::kDouble).view({1, 1, 2});
  EXPECT_NEAR(cosine_prior(logits.narrow(1, 0, 1), mask.narrow(1, 0, 1), anti, ctx, CosTarget::one_minus).item<double>(),
              -std::log(0.75), 1e-12);
  EXPECT_EQ(parse_cos_target("one_minus"), CosTarget::one_minus);
  EXPECT_STREQ(cos_target_name(CosTarget::one_plus), "one_plus");
}

TEST(FractalPrior, Correlation) {
  // e1 = [1, 2, 3], e2 = [3, 2, 1]: pearson -1, so c12 = 0 and c11 = c22 = 1; p = (0.5, 0.75).
  // i=j=1: |0.25 - 1| |0.25 - 1| = 0.5625; i=j=2: |0.0625 - 1| |0.5625 - 1| = 0.41015625;
  // i != j, twice: |0.125| |0.375| = 0.046875. Sum 1.06640625, over n = 2 sentences.
  at::Tensor logits = at::tensor({0.0, std::log(3.0), 9.0}, at::kDouble).view({1, 3});
  at::Tensor mask = at::tensor({1, 1, 0}, at::kInt).to(at::kBool).view({1, 3});  // and a padded third sentence
  at::Tensor sent = at::tensor({1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 7.0, -1.0, 4.0}, at::kDouble).view({1, 3, 3});
  EXPECT_NEAR(correlation_prior(logits, mask, sent).item<double>(), 1.06640625 / 2, 1e-12);
}

TEST(FractalPseudoLabels, EveryRule) {
  // MAX, negative bag: all 0 whatever the scores.
  EXPECT_EQ(pseudo_labels({0.9, 0.2}, 0, Aggregation::max), (std::vector<int32_t>{0, 0}));
  // MAX, positive bag with no sentence above 0.5: the highest becomes 1.
  EXPECT_EQ(pseudo_labels({0.3, 0.45, 0.1}, 1, Aggregation::max), (std::vector<int32_t>{0, 1, 0}));
  // MAX, positive bag already consistent: thresholded as is.
  EXPECT_EQ(pseudo_labels({0.7, 0.2, 0.6}, 1, Aggregation::max), (std::vector<int32_t>{1, 0, 1}));
  // MIN, positive bag: all 1.
  EXPECT_EQ(pseudo_labels({0.1, 0.9}, 1, Aggregation::min), (std::vector<int32_t>{1, 1}));
  // MIN, negative bag with no sentence at or below 0.5: the lowest becomes 0.
  EXPECT_EQ(pseudo_labels({0.8, 0.55, 0.9}, 0, Aggregation::min), (std::vector<int32_t>{1, 0, 1}));
  // MIN, negative bag already consistent.
  EXPECT_EQ(pseudo_labels({0.8, 0.3, 0.2}, 0, Aggregation::min), (std::vector<int32_t>{1, 0, 0}));
  // AVG: no consistency rule, the threshold alone; a bag of one.
  EXPECT_EQ(pseudo_labels({0.51}, 0, Aggregation::avg), (std::vector<int32_t>{1}));
}

TEST(FractalData, Prm800kPathsOfAKnownProblem) {
  // Rows 7004-7012 hold one problem ("It takes Alice 25 minutes to clean her room..."): four steps
  // rated 1, then five rated alternatives for step 5, one of them -1 ("I'm a fast cleaner.").
  auto lines = lines_of(kData + "prm800k/phase1_train_plus.stepwise-critic.jsonl.xz", 7004, 7012);
  ASSERT_EQ(lines.size(), 9u);
  auto bags = prm800k_bags(lines, "rows");
  ASSERT_EQ(bags.size(), 5u);  // every path ends at one of the five alternatives
  int bad = 0;
  for (auto& b : bags) {
    ASSERT_EQ(b.words.size(), 5u);
    EXPECT_EQ(b.words[0], "So we can just multiply 25 by $\\frac{2}{5}$.");
    EXPECT_EQ(b.words[3], "So it takes Bob 10 minutes to clean his room.");
    if (b.words[4] == "I'm a fast cleaner.") {
      ++bad;
      EXPECT_EQ(b.label, "0");  // MIN: one step rated -1
      EXPECT_EQ(b.tags, (std::vector<std::string>{"1", "1", "1", "1", "0"}));
    } else {
      EXPECT_EQ(b.label, "1");
      EXPECT_EQ(b.tags, (std::vector<std::string>{"1", "1", "1", "1", "1"}));
    }
    EXPECT_EQ(b.text.rfind("It takes Alice $25$ minutes", 0), 0u);
  }
  EXPECT_EQ(bad, 1);
  // The rows in another order make the same bags.
  std::vector<std::string> rev(lines.rbegin(), lines.rend());
  EXPECT_EQ(prm800k_bags(rev, "rows").size(), 5u);
}

TEST(FractalData, Prm800kRepeatedPathsAndBadRows) {
  // The same path twice, once rated 1 and once -1 at its last step: one bag, bad.
  std::string first = R"({"instruction": "p", "responses": [], "next_response": "a", "rating": 1})";
  std::string again = R"({"instruction": "p", "responses": ["a"], "next_response": "b", "rating": 1})";
  std::string bad = R"({"instruction": "p", "responses": ["a"], "next_response": "b", "rating": -1})";
  auto bags = prm800k_bags({first, again, bad}, "rows");
  ASSERT_EQ(bags.size(), 1u);
  EXPECT_EQ(bags[0].label, "0");
  EXPECT_EQ(bags[0].tags, (std::vector<std::string>{"1", "0"}));
  try {
    prm800k_bags({first, R"({"instruction": null, "responses": [], "next_response": "a"})"}, "rows");
    ADD_FAILURE() << "no error";
  } catch (const kiln::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("rows:2: not a PRM800K stepwise-critic row"), std::string::npos) << e.what();
  }
}

// Issue 32, point 7: PRM800K in openai/prm800k's own layout, bagged as the official preparation
// does. The expected values are official_prm800k_bags.py's output on the same files (the official
// process_data.py loop).
TEST(FractalData, Prm800kRawAsTheOfficialPreparation) {
  // The raw examples are pretty-printed JSON objects one after another: one line each here.
  std::vector<std::string> lines;
  for (const char* f : {"prm800k-phase1-train-example.json", "prm800k-phase2-train-example.jsonl"}) {
    std::ifstream in(kData + "prm800k/raw_examples/" + f);
    ASSERT_TRUE(in) << f;
    for (nlohmann::json j; in >> std::ws && in.peek() != EOF;) {
      in >> j;
      lines.push_back(j.dump());
    }
  }
  ASSERT_EQ(lines.size(), 12u);
  auto bags = prm800k_raw_bags(lines, "examples");
  const std::vector<size_t> steps = {6, 29, 6, 7, 19, 3, 2, 3, 11, 2, 26, 3};
  ASSERT_EQ(bags.size(), steps.size());
  for (size_t i = 0; i < bags.size(); ++i) {
    EXPECT_EQ(bags[i].words.size(), steps[i]) << i;
    EXPECT_EQ(bags[i].tags.size(), steps[i]) << i;
    EXPECT_EQ(bags[i].label, "0") << i;  // every example has a step rated -1
    EXPECT_EQ(bags[i].line, int64_t(i + 1)) << i;
  }
  // Ratings 1, -1, 1, 1, 1, 0: only -1 is bad; the problem is the context.
  EXPECT_EQ(bags[0].tags, (std::vector<std::string>{"1", "0", "1", "1", "1", "1"}));
  EXPECT_NE(bags[0].text.find("Three pencils and a jumbo eraser"), std::string::npos) << bags[0].text.substr(0, 80);
  // The 30-step solution: one step's first completion has no rating, so 29 sentences.
  nlohmann::json second = nlohmann::json::parse(lines[1]);
  EXPECT_EQ(second["label"]["steps"].size(), 30u);

  // Made-up records: a good solution (a neutral step is good), steps the official test skips (no
  // completions, a null first completion, a null rating), one with no rated step (no bag).
  const std::string good =
      R"({"question": {"problem": "p1"}, "label": {"steps": [)"
      R"({"completions": [{"text": "a", "rating": 1}, {"text": "x", "rating": -1}]},)"
      R"({"completions": null, "human_completion": {"text": "h"}},)"
      R"({"completions": [null]},)"
      R"({"completions": [{"text": "b", "rating": null}]},)"
      R"({"completions": [{"text": "c", "rating": 0}]}]}})";
  const std::string none = R"({"question": {"problem": "p2"}, "label": {"steps": [{"completions": null}]}})";
  bags = prm800k_raw_bags({good, "", none}, "made");
  ASSERT_EQ(bags.size(), 1u);
  EXPECT_EQ(bags[0].text, "p1");
  EXPECT_EQ(bags[0].words, (std::vector<std::string>{"a", "c"}));  // the first completion only
  EXPECT_EQ(bags[0].tags, (std::vector<std::string>{"1", "1"}));
  EXPECT_EQ(bags[0].label, "1");
  try {
    prm800k_raw_bags({good, R"({"question": {"problem": 3}, "label": {"steps": []}})"}, "made");
    ADD_FAILURE() << "no error";
  } catch (const kiln::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("made:2: not a PRM800K record"), std::string::npos) << e.what();
  }
}

TEST(FractalData, WikiqaBagsAndHoldOut) {
  auto bags = read_wikiqa(kData + "wikiqa/dev.tsv");
  ASSERT_EQ(bags.size(), 122u);  // SOURCES.md: 122 questions, 1,126 pairs, 136 positive
  size_t pairs = 0, pos = 0;
  for (auto& b : bags) {
    pairs += b.words.size();
    for (auto& t : b.tags) pos += t == "1";
    EXPECT_EQ(b.label, "1");  // the filtered splits keep answered questions only
  }
  EXPECT_EQ(pairs, 1126u);
  EXPECT_EQ(pos, 136u);
  // hold_out splits the contexts: disjoint, and together all of them.
  auto train = hold_out(bags, 0.3, false), eval = hold_out(bags, 0.3, true);
  EXPECT_EQ(train.size() + eval.size(), bags.size());
  EXPECT_GT(eval.size(), 20u);
  for (auto& e : eval)
    for (auto& t : train) ASSERT_NE(e.text, t.text);
}

TEST(FractalData, BagsJsonlAndItsErrors) {
  auto dir = fs::temp_directory_path() / "kiln_fractal_bags";
  fs::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream((dir / name).string()) << text;
    return (dir / name).string();
  };
  auto ok = write("ok.jsonl",
                  "{\"context\": \"q\", \"sentences\": [\"a\", \"b\"], \"label\": 1, \"sentence_labels\": [0, true]}\n"
                  "\n{\"context\": \"r\", \"sentences\": [\"c\"], \"label\": false}\n");
  auto bags = read_bags(ok);
  ASSERT_EQ(bags.size(), 2u);
  EXPECT_EQ(bags[0].tags, (std::vector<std::string>{"0", "1"}));
  EXPECT_EQ(bags[1].tags, (std::vector<std::string>{""}));  // unknown
  EXPECT_EQ(bags[1].label, "0");
  EXPECT_EQ(bags[1].line, 3);
  auto expect_error = [&](const std::string& text, const std::string& needle) {
    auto p = write("bad.jsonl", text);
    try {
      read_bags(p);
      ADD_FAILURE() << "no error for " << text;
    } catch (const kiln::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(p + needle), std::string::npos) << e.what();
    }
  };
  expect_error("{\"context\": \"q\", \"sentences\": [], \"label\": 1}\n", ":1: a bag needs at least one sentence");
  expect_error("{\"context\": \"q\", \"sentences\": [\"a\"], \"label\": 2}\n", ":1: `label` must be 0, 1");
  expect_error("\n{\"context\": \"q\", \"sentences\": [\"a\"], \"label\": 1, \"sentence_labels\": [1, 0]}\n",
               ":2: `sentence_labels` must list one label per sentence");
  expect_error("{\"sentences\": [\"a\"], \"label\": 1}\n", ":1: a bag needs `context`");
  fs::remove_all(dir);
}

TEST(FractalMetric, SentenceAucWithTies) {
  // Positives {0.4, 0.8} against negatives {0.1, 0.4}: 1 + 0.5 (the tie) + 1 + 1 of 4 pairs.
  EXPECT_DOUBLE_EQ(kiln::train::auc_roc({0.1, 0.4, 0.4, 0.8}, {0, 0, 1, 1}), 0.875);
}
