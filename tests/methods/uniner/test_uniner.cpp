// UniversalNER: the official span-F1 on hand-made outputs, the conversion of IOB1-tagged sentences
// into mention lists, negative-type sampling frequencies, and the store the method writes (loss
// only on the assistant's answers; generation prompts ending at the last "ASSISTANT:").
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/config.h"
#include "core/error.h"
#include "data/preprocess.h"
#include "data/readers.h"
#include "data/store.h"
#include "data/tokenizer.h"
#include "methods/lm/lm_task.h"
#include "methods/registry.h"
#include "methods/uniner/instructions.h"
#include "methods/uniner/span_f1.h"

namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::methods::uniner;
using Strings = std::vector<std::string>;

namespace {

const std::string kModel = std::string(KILN_SOURCE_DIR) + "/models/stories260K";
const std::string kLlama2Tokenizer = std::string(KILN_SHARED_DIR) + "/models/llama2-tokenizer";

std::string temp_dir(const std::string& name) {
  auto d = fs::path(testing::TempDir()) / "kiln_uniner" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

Recipe make_recipe(const std::string& dir, const std::string& extra) {
  std::string y = "name: t\nmethod: uniner\nmodel:\n  path: " + kModel + "\ncheckpoint:\n  run_dir: " + dir +
                  "\nlog:\n  tensorboard: false\n" + extra;
  return read_recipe_tree(recipe::parse_string(y, "test.yaml"), "test.yaml");
}

data::Record tagged(const std::string& line) {  // "word/TAG word/TAG ..."
  data::Record r;
  std::stringstream ss(line);
  std::string wt;
  while (ss >> wt) {
    size_t p = wt.rfind('/');
    r.words.push_back(wt.substr(0, p));
    r.tags.push_back(wt.substr(p + 1));
  }
  return r;
}

}  // namespace

TEST(UninerMetric, NormalisesLikeTheOfficialScript) {
  EXPECT_EQ(normalize("The  Beatles"), "beatles");
  EXPECT_EQ(normalize("U.S.A."), "usa");
  EXPECT_EQ(normalize("an apple a day"), "apple day");
  EXPECT_EQ(normalize("Theatre"), "theatre");  // an article only as a whole word
  EXPECT_EQ(normalize("Müller's  Café"), "müllers café");
  EXPECT_EQ(normalize("  a  "), "");
}

TEST(UninerMetric, ParsesTheFirstListAfterTheLastAssistantTurn) {
  EXPECT_EQ(parse_answer("[\"Apple\", \"Google\"]"), (Strings{"apple", "google"}));
  EXPECT_EQ(parse_answer("USER: x ASSISTANT: [\"old\"] USER: y ASSISTANT:  [\"The EU\"] and [\"x\"]"),
            (Strings{"eu"}));
  EXPECT_EQ(parse_answer("[\"Paris\", \"paris\", \"the Paris\"]"), (Strings{"paris"}));  // duplicates once
  bool ok = true;
  EXPECT_TRUE(parse_answer("no list here", &ok).empty());
  EXPECT_FALSE(ok);
  EXPECT_TRUE(parse_answer("[\"unclosed", &ok).empty());
  EXPECT_FALSE(ok);
  EXPECT_TRUE(parse_answer("[\"a\nb\"]", &ok).empty());  // the list must close on its line
  EXPECT_FALSE(ok);
  EXPECT_TRUE(parse_answer("[1, 2]", &ok).empty());  // not strings: the official parser gives []
  EXPECT_FALSE(ok);
  EXPECT_TRUE(parse_answer("[]", &ok).empty());
  EXPECT_TRUE(ok);
}

// Issue 32, point 3. The official parser (universal-ner/universal-ner src/eval/evaluate.py @
// 4e454fe) takes r.split('ASSISTANT:')[-1].strip(), then re.match(r'\[(.*?)\]'): a list only at
// the start. Each expected value below is that reading worked by hand.
TEST(UninerMetric, OfficialReadingTakesAListOnlyAtTheStart) {
  bool ok = true;
  // Text before the list: the official reading finds nothing; the old one took the list.
  EXPECT_TRUE(parse_answer("sure: [\"The EU\"]", &ok).empty());
  EXPECT_FALSE(ok);
  EXPECT_EQ(parse_answer("sure: [\"The EU\"]", &ok, AnswerAt::anywhere), (Strings{"eu"}));
  EXPECT_TRUE(ok);
  // White space around the answer is stripped first, so a leading space or newline still matches.
  EXPECT_EQ(parse_answer(" \n [\"Oslo\"] \n"), (Strings{"oslo"}));
  EXPECT_EQ(parse_answer("USER: q ASSISTANT: [\"Oslo\"]"), (Strings{"oslo"}));
  // A first list that does not close on its line: re.match fails; the old reading went on to the next.
  EXPECT_TRUE(parse_answer("[\"a\n[\"b\"]").empty());
  EXPECT_EQ(parse_answer("[\"a\n[\"b\"]", nullptr, AnswerAt::anywhere), (Strings{"b"}));
  EXPECT_EQ(parse_answer_at("start"), AnswerAt::start);
  EXPECT_STREQ(answer_at_name(AnswerAt::anywhere), "anywhere");
}

TEST(UninerMetric, ScoresDifferOnlyWhereAListFollowsText) {
  // gold, output. Official: 1 correct of 2 predicted (the 2nd and 3rd outputs predict nothing),
  // 4 gold: P 0.5, R 0.25, F1 1/3. Anywhere: 3 correct of 4 predicted: P 0.75, R 0.75, F1 0.75.
  std::vector<std::pair<std::string, std::string>> cases = {
      {"[\"Apple\", \"Google\"]", "[\"apple\", \"IBM\"]"},
      {"[\"Oslo\"]", "The answer is [\"Oslo\"]"},
      {"[\"Bob\"]", "Answer:\n[\"Bob\"]"},
  };
  Counts official, anywhere;
  for (auto& [g, o] : cases) {
    official.add(parse_answer(o), parse_answer(g));
    anywhere.add(parse_answer(o, nullptr, AnswerAt::anywhere), parse_answer(g, nullptr, AnswerAt::anywhere));
  }
  EXPECT_EQ(official.correct, 1);
  EXPECT_EQ(official.predicted, 2);
  EXPECT_EQ(official.gold, 4);
  EXPECT_NEAR(official.f1(), 1.0 / 3.0, 1e-9);
  EXPECT_EQ(anywhere.correct, 3);
  EXPECT_EQ(anywhere.predicted, 4);
  EXPECT_NEAR(anywhere.f1(), 0.75, 1e-9);
}

TEST(UninerMetric, MicroPrecisionRecallF1OnHandMadeOutputs) {
  // gold, output
  std::vector<std::pair<std::string, std::string>> cases = {
      {"[\"Apple\", \"Google\"]", "[\"apple\", \"Microsoft\"]"},  // 1 right of 2 predicted, 2 gold
      {"[\"the United Nations\"]", "[\"United Nations.\", \"United Nations\"]"},  // duplicate after normalising
      {"[]", "[\"Bob\"]"},            // an empty gold list: a false positive
      {"[\"Oslo\"]", "I cannot say"},  // unparseable: nothing predicted
      {"[]", "[]"},
  };
  Counts c;
  for (auto& [g, o] : cases) c.add(parse_answer(o), parse_answer(g));
  EXPECT_EQ(c.correct, 2);
  EXPECT_EQ(c.predicted, 4);
  EXPECT_EQ(c.gold, 4);
  EXPECT_NEAR(c.precision(), 0.5, 1e-9);
  EXPECT_NEAR(c.recall(), 0.5, 1e-9);
  EXPECT_NEAR(c.f1(), 0.5, 1e-9);
  Counts none;
  EXPECT_EQ(none.f1(), 0.0);  // 1e-10 in the denominators: no division by zero
}

TEST(UninerData, Iob1SentenceIntoMentionLists) {
  // IOB1 as CoNLL-2003 writes it: I- throughout, B- only where a mention follows one of its type.
  data::Record r = tagged(
      "Peter/I-PER Blackburn/I-PER met/O Jan/I-PER Ann/B-PER in/O New/I-LOC York/I-LOC ,/O "
      "Peter/I-PER Blackburn/I-PER and/O the/O EU/I-ORG Commission/I-ORG ./O");
  auto m = mentions(r.words, r.tags);
  ASSERT_EQ(m.size(), 6u);
  EXPECT_EQ(m[0], (std::pair<std::string, std::string>{"PER", "Peter Blackburn"}));
  EXPECT_EQ(m[1], (std::pair<std::string, std::string>{"PER", "Jan"}));
  EXPECT_EQ(m[2], (std::pair<std::string, std::string>{"PER", "Ann"}));  // B- splits two adjacent PERs
  EXPECT_EQ(m[3], (std::pair<std::string, std::string>{"LOC", "New York"}));
  EXPECT_EQ(m[4], (std::pair<std::string, std::string>{"PER", "Peter Blackburn"}));
  EXPECT_EQ(m[5], (std::pair<std::string, std::string>{"ORG", "EU Commission"}));
  auto p = passages_from_tags({r}, {{"PER", "person"}, {"LOC", "location"}, {"ORG", "organization"}, {"MISC", "miscellaneous"}});
  ASSERT_EQ(p.size(), 1u);
  ASSERT_EQ(p[0].questions.size(), 4u);
  EXPECT_EQ(p[0].questions[0].type, "person");
  EXPECT_EQ(p[0].questions[0].answer, (Strings{"Peter Blackburn", "Jan", "Ann"}));  // in order, once each
  EXPECT_EQ(p[0].questions[1].answer, (Strings{"New York"}));
  EXPECT_EQ(p[0].questions[2].answer, (Strings{"EU Commission"}));
  EXPECT_TRUE(p[0].questions[3].answer.empty());  // asked although absent: answers []
  EXPECT_EQ(answer_json(p[0].questions[0].answer), "[\"Peter Blackburn\", \"Jan\", \"Ann\"]");
  // BIO reads the same.
  data::Record bio = tagged("New/B-LOC York/I-LOC Boston/B-LOC");
  auto mb = mentions(bio.words, bio.tags);
  ASSERT_EQ(mb.size(), 2u);
  EXPECT_EQ(mb[1].second, "Boston");
}

TEST(UninerData, RealConllTrainingConversation) {
  data::ReadOptions o;
  o.tag_scheme = "keep";
  auto recs = data::read_conll(std::string(KILN_SHARED_DIR) + "/data/conll2003/eng.train", o);
  ASSERT_GT(recs.size(), 14000u);
  // "EU rejects German call to boycott British lamb ." is the first sentence.
  auto p = passages_from_tags({recs[0]}, {{"ORG", "organization"}, {"MISC", "miscellaneous"}});
  data::Record t = training_record(p[0], "Dataset: conll2003");
  ASSERT_EQ(t.turns.size(), 6u);
  EXPECT_EQ(t.turns[0].value, "Dataset: conll2003\nText: EU rejects German call to boycott British lamb .");
  EXPECT_EQ(t.turns[1].value, kReadReply);
  EXPECT_EQ(t.turns[2].value, "What describes organization in the text?");
  EXPECT_EQ(t.turns[3].value, "[\"EU\"]");
  EXPECT_EQ(t.turns[5].value, "[\"German\", \"British\"]");
}

TEST(UninerData, NegativeTypesFollowTypeFrequency) {
  // 4000 passages asking about `own`; types a, b, c appear in 100, 200 and 700 other passages.
  std::vector<Passage> ps;
  auto add = [&](const std::string& type, int n) {
    for (int i = 0; i < n; ++i) ps.push_back({"t", {{type, {"x"}}}, "f", i});
  };
  add("a", 100), add("b", 200), add("c", 700);
  const size_t probe = ps.size();
  add("own", 4000);
  int64_t added = add_negative_types(ps, 1.0, 7);  // one negative per question: one per passage
  EXPECT_EQ(added, int64_t(ps.size()));
  std::map<std::string, int> drawn;
  for (size_t i = probe; i < ps.size(); ++i) {
    ASSERT_EQ(ps[i].questions.size(), 2u);
    EXPECT_TRUE(ps[i].questions[1].answer.empty());
    ++drawn[ps[i].questions[1].type];
  }
  // Among the types a passage lacks, in proportion to frequency: own (4000) is asked already, so
  // a : b : c = 0.1 : 0.2 : 0.7 (4000 draws: 3 sigma is under 0.022).
  EXPECT_EQ(drawn.count("own"), 0u);
  EXPECT_NEAR(drawn["a"] / 4000.0, 0.1, 0.02);
  EXPECT_NEAR(drawn["b"] / 4000.0, 0.2, 0.025);
  EXPECT_NEAR(drawn["c"] / 4000.0, 0.7, 0.03);
  // The same seed draws the same types (every rank builds the same store).
  std::vector<Passage> again(ps.begin(), ps.end());
  for (auto& p : again) p.questions.resize(1);
  add_negative_types(again, 1.0, 7);
  for (size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(again[i].questions[1].type, ps[i].questions[1].type);
  // Half a negative per question on average.
  for (auto& p : again) p.questions.resize(1);
  EXPECT_NEAR(double(add_negative_types(again, 0.5, 3)) / double(again.size()), 0.5, 0.03);
}

TEST(UninerData, SamplingWeightRepeatsPassages) {
  std::vector<Passage> ps(1000, Passage{"t", {}, "f", 1});
  EXPECT_EQ(apply_weight(ps, 2.0, 1).size(), 2000u);
  EXPECT_NEAR(double(apply_weight(ps, 0.3, 1).size()), 300.0, 45.0);
  EXPECT_EQ(apply_weight(ps, 1.5, 9).size(), apply_weight(ps, 1.5, 9).size());
}

TEST(UninerData, ConversationFormatIsChecked) {
  data::Record ok;
  ok.file = "p.json", ok.line = 3;
  ok.turns = {{"human", "Text: Bob runs."}, {"gpt", kReadReply}, {"human", "What describes person in the text?"},
              {"gpt", "[\"Bob\"]"}};
  auto ps = passages_from_conversations({ok}, false, nullptr);
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].text, "Bob runs.");
  EXPECT_EQ(ps[0].questions[0].type, "person");
  data::Record bad = ok;
  bad.turns[3].value = "Bob";
  try {
    passages_from_conversations({bad}, false, nullptr);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("p.json:3"), std::string::npos) << e.what();
  }
  data::ReadStats st;
  EXPECT_TRUE(passages_from_conversations({bad}, true, &st).empty());
  EXPECT_EQ(st.skipped, 1);
}

TEST(UninerStore, LossOnlyOnAnswersAndPromptsEndAtTheLastQuestion) {
  std::string dir = temp_dir("store");
  std::ofstream(dir + "/train.txt") << "Bob I-PER\nlives O\nin O\nOslo I-LOC\n. O\n\nNothing O\nhere O\n";
  std::ofstream(dir + "/dev.txt") << "Ann I-PER\nsings O\n";
  Recipe r = make_recipe(dir, "data:\n  format: conll\n  train: " + dir + "/train.txt\n  eval: " + dir +
                                  "/dev.txt\n  max_len: 512\n  store_dir: " + dir +
                                  "/data\ntask:\n  dataset: toy\n  types: {PER: person, LOC: location}\n");
  auto enc = methods::make_task(r)->encoder(r);
  data::Tokenizer tok(kModel);
  data::preprocess(r, *enc, tok);

  data::Store train(dir + "/data/train.h5");
  EXPECT_EQ(train.kind(), "uniner");
  ASSERT_EQ(train.size(), 2);
  // The masked tokens, decoded, are exactly the answers, each with its EOS.
  auto ids = train.ids(0).vec();
  auto mask = train.get<uint8_t>("loss_mask", 0);
  std::vector<int32_t> answer;
  std::string answers;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (mask[int64_t(i)]) {
      if (ids[i] == tok.eos_id()) {
        answers += tok.decode(answer) + "|";
        answer.clear();
      } else {
        answer.push_back(ids[i]);
      }
    }
  }
  EXPECT_EQ(answers, "I've read this text.|[\"Bob\"]|[\"Oslo\"]|");
  EXPECT_EQ(ids[0], tok.bos_id());
  EXPECT_EQ(mask[0], 0);
  EXPECT_EQ(ids.back(), tok.eos_id());
  EXPECT_EQ(train.value<int32_t>("question", 0), -1);

  // Evaluation: one example per (sentence, type); the prompt is everything before the gold answer.
  data::Store eval(dir + "/data/eval.h5");
  ASSERT_EQ(eval.size(), 2);
  EXPECT_EQ(eval.label_names(), (Strings{"toy:person", "toy:location"}));
  auto e = eval.ids(0).vec();
  const int32_t p = eval.value<int32_t>("prompt_len", 0);
  std::string prompt = tok.decode(std::vector<int32_t>(e.begin(), e.begin() + p));
  EXPECT_EQ(prompt.substr(prompt.size() - 10), "ASSISTANT:");
  EXPECT_NE(prompt.find("What describes person in the text?"), std::string::npos);
  EXPECT_NE(prompt.find("A virtual assistant answers questions"), std::string::npos);
  EXPECT_EQ(tok.decode(std::vector<int32_t>(e.begin() + p, e.end() - 1)), "[\"Ann\"]");
  auto gold = eval.get<uint8_t>("gold", 1);
  EXPECT_EQ(std::string(gold.begin(), gold.end()), "[]");
  EXPECT_EQ(eval.value<int32_t>("question", 1), 1);
}

TEST(UninerRecipe, BadSourcesAreNamed) {
  std::string dir = temp_dir("bad");
  Recipe r = make_recipe(dir, "data:\n  train: x.txt\ntask:\n  sources:\n    - {name: a, train: y.txt}\n");
  try {
    methods::make_task(r)->encoder(r);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("task.sources"), std::string::npos) << e.what();
  }
  Recipe r2 = make_recipe(dir, "task:\n  sources:\n    - {name: a, train: y.txt, wieght: 2}\n");
  try {
    methods::make_task(r2)->encoder(r2);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("weight"), std::string::npos) << e.what();
  }
}

TEST(UninerStore, ReadsTheEvaluationJsonFormatAndMixesSources) {
  // UniversalNER's evaluation files: one question per conversation, the gold answer last.
  std::string dir = temp_dir("json");
  std::ofstream(dir + "/movie.json") << R"([
 {"id": "0", "conversations": [{"from": "human", "value": "Text: star wars by george lucas"},
   {"from": "gpt", "value": "I've read this text."},
   {"from": "human", "value": "What describes director in the text?"}, {"from": "gpt", "value": "[\"george lucas\"]"}]},
 {"id": "1", "conversations": [{"from": "human", "value": "Text: star wars by george lucas"},
   {"from": "gpt", "value": "I've read this text."},
   {"from": "human", "value": "What describes title in the text?"}, {"from": "gpt", "value": "[\"star wars\"]"}]}
])";
  std::ofstream(dir + "/train.txt") << "Bob I-PER\nruns O\n\nAnn I-PER\n";
  Recipe r = make_recipe(dir, "data:\n  max_len: 512\n  store_dir: " + dir +
                                  "/data\ntask:\n  dataset_prefix: true\n  sources:\n"
                                  "    - {name: toy, train: " + dir + "/train.txt, weight: 2}\n"
                                  "    - {name: movie, format: conversation, eval: " + dir + "/movie.json}\n");
  auto enc = methods::make_task(r)->encoder(r);
  data::Tokenizer tok(kModel);
  data::preprocess(r, *enc, tok);
  data::Store train(dir + "/data/train.h5");
  EXPECT_EQ(train.size(), 4);  // two sentences, weight 2
  std::string first = tok.decode(train.ids(0).vec());
  EXPECT_NE(first.find("Dataset: toy\nText: Bob runs"), std::string::npos) << first;
  data::Store eval(dir + "/data/eval.h5");
  ASSERT_EQ(eval.size(), 2);
  EXPECT_EQ(eval.label_names(), (Strings{"movie:director", "movie:title"}));
  ASSERT_EQ(eval.meta().sources.size(), 1u);
  auto e = eval.ids(1).vec();
  std::string prompt = tok.decode(std::vector<int32_t>(e.begin(), e.begin() + eval.value<int32_t>("prompt_len", 1)));
  EXPECT_NE(prompt.find("Dataset: movie\nText: star wars"), std::string::npos) << prompt;
  const std::string tail = "What describes title in the text? ASSISTANT:";
  ASSERT_GE(prompt.size(), tail.size());
  EXPECT_EQ(prompt.substr(prompt.size() - tail.size()), tail);
  auto gold = eval.get<uint8_t>("gold", 1);
  EXPECT_EQ(std::string(gold.begin(), gold.end()), "[\"star wars\"]");
}

// Issue 32, point 2: the paper recipe evaluates on the official files (universal-ner/universal-ner
// src/eval/test_data/*.json @ 4e454fe), which ask CrossNER's types by their own names ("program
// language", "organization") and never "misc". Made-up files in that format stand in for them.
TEST(UninerRecipe, PaperRecipeEvaluatesOnTheOfficialJsonFiles) {
  std::string dir = temp_dir("paper");
  fs::create_directories(dir + "/data/pile-ner");
  fs::create_directories(dir + "/data/uniner-eval");
  auto conv = [](const std::string& text, const std::string& type, const std::string& answer) {
    return "{\"conversations\": [{\"from\": \"human\", \"value\": \"Text: " + text +
           "\"}, {\"from\": \"gpt\", \"value\": \"I've read this text.\"}, {\"from\": \"human\", \"value\": "
           "\"What describes " + type + " in the text?\"}, {\"from\": \"gpt\", \"value\": \"" + answer + "\"}]}";
  };
  std::ofstream(dir + "/data/pile-ner/pile-ner.json") << "[" << conv("Bob runs", "person", "[\\\"Bob\\\"]") << "]";
  const std::vector<std::string> files = {"CrossNER_AI", "CrossNER_literature", "CrossNER_music", "CrossNER_politics",
                                          "CrossNER_science", "mit-movie", "mit-restaurant"};
  for (const auto& f : files)
    std::ofstream(dir + "/data/uniner-eval/" + f + ".json")
        << "[" << conv("Python is used", "program language", "[\\\"Python\\\"]") << ", "
        << conv("Python is used", "organization", "[]") << "]";
  ::setenv("KILN_DATA_DIR", (dir + "/data").c_str(), 1);
  Recipe r = read_recipe(std::string(KILN_SOURCE_DIR) + "/recipes/uniner/pile_ner.yaml",
                         {"model.path=" + kModel, "checkpoint.run_dir=" + dir + "/run", "data.store_dir=" + dir + "/stores",
                          "data.max_len=256", "log.tensorboard=false"});
  auto enc = methods::make_task(r)->encoder(r);
  EXPECT_EQ(enc->sources(r.data, "eval").size(), files.size());
  data::Tokenizer tok(kModel);
  data::preprocess(r, *enc, tok);
  data::Store eval(dir + "/stores/eval.h5");
  ASSERT_EQ(eval.size(), int64_t(2 * files.size()));
  const auto& labels = eval.label_names();
  EXPECT_NE(std::find(labels.begin(), labels.end(), "crossner_ai:program language"), labels.end());
  for (const auto& l : labels) EXPECT_EQ(l.find(":misc"), std::string::npos) << l;
}

TEST(UninerRecipe, BadAnswerAtIsNamed) {
  std::string dir = temp_dir("answer_at");
  Recipe r = make_recipe(dir, "data:\n  format: conll\n  train: x.txt\ntask:\n  answer_at: begining\n");
  try {
    methods::make_task(r)->encoder(r);
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("task.answer_at"), std::string::npos) << what;
    EXPECT_NE(what.find("start"), std::string::npos) << what;
  }
}

// The ids and loss mask of official_train_ids.py: the official preprocess2 run with LLaMA-2's
// tokenizer on this conversation. "ASSISTANT: " is its own call, so each answer follows a lone
// space token (29871), and each later question starts with the dummy prefix of its own call.
TEST(UninerTrainingPieces, SeparateCallsGiveTheOfficialIds) {
  if (!fs::exists(kLlama2Tokenizer + "/tokenizer.model")) GTEST_SKIP() << kLlama2Tokenizer << " is missing";
  const data::Tokenizer tok(kLlama2Tokenizer);
  const std::vector<data::Turn> turns = {{"human", "Text: EU rejects German call."},
                                         {"gpt", "I've read this text."},
                                         {"human", "What describes organization in the text?"},
                                         {"gpt", "[\"EU\"]"},
                                         {"human", "What describes person in the text?"},
                                         {"gpt", "[]"}};
  const std::vector<int32_t> want = {
      1,     319,  6901,  20255, 6089,  5155,  515,   263,   1404,  2729,  373,   278,   4944,  14880, 29889, 3148,
      1001,  29901, 3992, 29901, 19007, 12560, 29879, 5332,  1246,  29889, 319,   1799,  9047,  13566, 29901, 29871,
      306,   29915, 345,  1303,  445,   1426,  29889, 2,     3148,  1001,  29901, 1724,  16612, 13013, 297,   278,
      1426,  29973, 319,  1799,  9047,  13566, 29901, 29871, 6796,  29923, 29965, 3108,  2,     3148,  1001,  29901,
      1724,  16612, 2022, 297,   278,   1426,  29973, 319,   1799,  9047,  13566, 29901, 29871, 5159,  2};
  const std::string want_mask = "0000000000000000000000000000000011111111000000000000000011111000000000000000011";
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  const size_t last = methods::encode_conversation(
      turns, "A virtual assistant answers questions from a user based on the provided paragraph.", tok, ids, mask,
      methods::TurnPieces::separate);
  EXPECT_EQ(ids, want);
  std::string got_mask;
  for (uint8_t m : mask) got_mask += char('0' + m);
  EXPECT_EQ(got_mask, want_mask);
  EXPECT_EQ(last, want.size() - 2);  // the last answer, "[]", starts after the lone space
  // Joined (the evaluation prompt): no lone space token before the answer.
  ids.clear(), mask.clear();
  methods::encode_conversation(turns, "A virtual assistant answers questions from a user based on the provided text.",
                               tok, ids, mask);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 29871), 0);
  EXPECT_EQ(ids.size(), want.size() - 3);
}

TEST(UninerData, QuestionsShuffledPerPassageBySeed) {
  std::vector<Passage> ps(40);
  for (auto& p : ps)
    for (const char* t : {"a", "b", "c", "d", "e"}) p.questions.push_back({t, {}});
  auto order = [](const Passage& p) {
    std::string o;
    for (const auto& q : p.questions) o += q.type;
    return o;
  };
  auto a = ps, b = ps, c = ps;
  shuffle_questions(a, 7);
  shuffle_questions(b, 7);
  shuffle_questions(c, 8);
  std::set<std::string> orders;
  int same_as_c = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    std::string o = order(a[i]);
    EXPECT_EQ(o, order(b[i]));  // the seed decides, nothing else
    std::string sorted = o;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, "abcde");  // a permutation
    orders.insert(o);
    same_as_c += o == order(c[i]);
  }
  EXPECT_GT(orders.size(), 20u);  // 120 orders possible: passages get different ones
  EXPECT_LT(same_as_c, 10);
}

// The paper recipes' training conversations: the "paragraph" system prompt, separate pieces and
// shuffled questions in the training store; the evaluation store keeps the evaluation prompt.
TEST(UninerStore, OfficialTrainingConversationsAndTheEvaluationPromptAsItWas) {
  std::string dir = temp_dir("official_train");
  std::ofstream(dir + "/train.txt") << "Bob I-PER\nlives O\nin O\nOslo I-LOC\nfor O\nACME I-ORG\n. O\n";
  std::ofstream(dir + "/dev.txt") << "Ann I-PER\nsings O\n";
  const std::string data = "data:\n  format: conll\n  train: " + dir + "/train.txt\n  eval: " + dir +
                           "/dev.txt\n  max_len: 512\n  store_dir: " + dir + "/data\n";
  // The training example's ids and loss mask, and the evaluation example's ids.
  struct Stored {
    std::vector<int32_t> train, eval;
    std::vector<uint8_t> mask;
  };
  auto stored = [&](const std::string& task) {
    Recipe r = make_recipe(dir, data + "task:\n  dataset: toy\n  types: {PER: person, LOC: location, ORG: organization}\n" + task);
    auto enc = methods::make_task(r)->encoder(r);
    data::Tokenizer tok(kModel);
    data::preprocess(r, *enc, tok);
    data::Store train(dir + "/data/train.h5"), eval(dir + "/data/eval.h5");
    auto m = train.get<uint8_t>("loss_mask", 0);
    return Stored{train.ids(0).vec(), eval.ids(0).vec(), std::vector<uint8_t>(m.begin(), m.end())};
  };
  const Stored joined = stored("");
  const Stored sep = stored(
      "  train_system_prompt: A virtual assistant answers questions from a user based on the provided paragraph.\n"
      "  train_turns: separate\n  shuffle_questions: true\n");
  EXPECT_EQ(joined.eval, sep.eval);
  data::Tokenizer tok(kModel);
  const std::string text = tok.decode(sep.train);
  EXPECT_NE(text.find("based on the provided paragraph. USER: Text: Bob lives in Oslo for ACME ."), std::string::npos) << text;
  for (const char* q : {"describes person", "describes location", "describes organization"})
    EXPECT_NE(text.find(q), std::string::npos) << q;
  // What precedes each answer (the tokens before a run of targets): "ASSISTANT: " encoded alone,
  // its lone space token outside the targets, in the official pieces; "... ASSISTANT:" otherwise.
  const auto space = tok.encode("ASSISTANT: ", false);
  const auto colon = tok.encode("ASSISTANT:", false);
  ASSERT_EQ(space.size(), colon.size() + 1);
  auto before_answers = [](const Stored& s, const std::vector<int32_t>& tail) {
    int answers = 0, matching = 0;
    for (size_t i = 1; i < s.train.size(); ++i)
      if (s.mask[i] && !s.mask[i - 1]) {
        ++answers;
        matching += i >= tail.size() && std::equal(tail.begin(), tail.end(), s.train.begin() + std::ptrdiff_t(i - tail.size()));
      }
    return std::make_pair(answers, matching);
  };
  EXPECT_EQ(before_answers(sep, space), std::make_pair(4, 4));  // "I've read this text." and three answers
  EXPECT_EQ(before_answers(joined, space).second, 0);
  EXPECT_EQ(before_answers(joined, std::vector<int32_t>(colon.end() - 3, colon.end())).second, 4);
}
