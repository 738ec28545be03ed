// The Darumeru-style harness (methods/lep/bench.h): its metrics on hand-worked cases, placeholder
// filling, the fastchat prompt against lm's own conversation encoding (what the model was trained
// on), the special strings of LLaMA-3's chat format, the table's errors, and a choice task scored on
// the bundled model whose log-likelihoods are checked against a direct forward pass.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/readers.h"
#include "data/tokenizer.h"
#include "methods/lep/bench.h"
#include "methods/lm/lm_task.h"
#include "model/hf_io.h"

namespace fs = std::filesystem;
using namespace kiln::lep;
using kiln::data::chat_preset;
using kiln::data::render;
using kiln::data::special_strings;
using kiln::InputError;
using nlohmann::json;

namespace {
const std::string kShared = KILN_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K/hf";

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/kiln_bench_XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(BenchMetrics, HandWorkedCases) {
  EXPECT_EQ(normalize_answer("  Император   Всероссийский!! "), "император всероссийский");
  EXPECT_EQ(normalize_answer("«Городской думы» — ЁЖ."), "городской думы ёж");
  EXPECT_DOUBLE_EQ(token_f1("Городской думы", "городской думы"), 1.0);
  // pred {a b c}, gold {b c d e}: 2 shared; precision 2/3, recall 2/4, F1 = 2 PR / (P + R) = 4/7.
  EXPECT_NEAR(token_f1("a b c", "b c d e"), 4.0 / 7.0, 1e-12);
  EXPECT_DOUBLE_EQ(token_f1("x", "y"), 0.0);
  // LCS of "abcde" and "abxde" is "abde" (4): 2 * 4 / 10.
  EXPECT_NEAR(lcs_ratio("abcde", "abxde"), 0.8, 1e-12);
  EXPECT_NEAR(lcs_ratio("привет", "привет"), 1.0, 1e-12);  // code points, not bytes
  EXPECT_NEAR(lcs_ratio("при", "привет"), 2.0 * 3 / 9, 1e-12);
  // Classes 1, 2: class 1 tp 1 fp 1 fn 0 -> 2/3; class 2 tp 0 -> 0; macro 1/3.
  EXPECT_NEAR(macro_f1({"1", "1"}, {"1", "2"}, {"1", "2"}), 1.0 / 3.0, 1e-12);
}

TEST(BenchRecords, PlaceholdersAndAnswersFromTheRecord) {
  EXPECT_EQ(fill("Q: {question} {unknown} {}", json{{"question", "why?"}, {"n", 3}}), "Q: why? {unknown} {}");
  EXPECT_EQ(fill("{n}+{n}", json{{"n", 3}}), "3+3");
  TempDir dir;
  TaskSpec t;
  t.name = "MultiQ";
  t.type = "generate";
  t.answer_field = "segment";
  t.file = kShared + "/data/darumeru/MultiQ.jsonl";
  const auto recs = read_records(t);
  ASSERT_EQ(recs.size(), 50u);
  EXPECT_EQ(recs[0].golds, std::vector<std::string>{"Император Всероссийский"});
  EXPECT_EQ(recs[0].messages[1].role, "assistant");  // "bot"
  EXPECT_EQ(recs[0].messages[1].content, "Ответ:");
  EXPECT_EQ(recs[0].messages[0].content.find("{question}"), std::string::npos);
  EXPECT_NE(recs[0].messages[0].content.find("Павел Егорович Томилов"), std::string::npos);

  t.answer_field = "";
  EXPECT_NE(error_of([&] { read_records(t); }).find("MultiQ.jsonl:1: field `outputs`"), std::string::npos);
  TaskSpec c;
  c.name = "bad";
  c.choices = {"1", "2"};
  c.file = dir.write("bad.jsonl", R"({"messages": [{"role": "user", "content": "x"}], "outputs": "1"})"
                                  "\n"
                                  R"({"messages": [{"role": "user", "content": "x"}], "outputs": "3"})"
                                  "\n");
  EXPECT_NE(error_of([&] { read_records(c); }).find("bad.jsonl:2: gold answer `3` is not one of"), std::string::npos);
  c.file = dir.write("role.jsonl", R"({"messages": [{"role": "robot", "content": "x"}], "outputs": "1"})");
  EXPECT_NE(error_of([&] { read_records(c); }).find("role.jsonl:1: message role `robot`"), std::string::npos);
}

TEST(BenchPrompts, FastchatIsLmsConversationEncoding) {
  const kiln::data::Tokenizer tok(kStories);
  const auto specials = special_strings(tok, kStories);
  ChatFormat chat = chat_preset("fastchat");
  chat.system_prompt = "Chat.";
  std::vector<int32_t> want;
  std::vector<uint8_t> mask;
  const size_t prompt_end = kiln::methods::encode_conversation(
      {{"human", "Repeat the text: a cat"}, {"gpt", "a cat"}, {"human", "And again?"}, {"gpt", "a cat"}}, "Chat.", tok, want, mask);
  // Everything before the last answer, rendered by the harness with the assistant's turn open.
  const auto got = render(chat, {{"user", "Repeat the text: a cat"}, {"assistant", "a cat"}, {"user", "And again?"}}, tok, specials);
  EXPECT_EQ(got, std::vector<int32_t>(want.begin(), want.begin() + std::ptrdiff_t(prompt_end)));
  // The answer, encoded alone, is what lm trained on.
  const auto answer = tok.encode("a cat", false, false);
  EXPECT_EQ(std::vector<int32_t>(want.begin() + std::ptrdiff_t(prompt_end), want.end() - 1), answer);
}

TEST(BenchPrompts, Llama3SpecialStringsBecomeTheirIds) {
  const std::string dir = kShared + "/models/llama3-tokenizer";
  const kiln::data::Tokenizer tok(dir);
  const auto specials = special_strings(tok, dir);
  const auto ids = render(chat_preset("llama3"), {{"user", "  Hi  "}}, tok, specials);
  // <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n
  std::vector<int32_t> want = {128000, 128006};
  for (int32_t v : tok.encode("user", false, false)) want.push_back(v);
  want.push_back(128007);
  for (int32_t v : tok.encode("\n\nHi", false, false)) want.push_back(v);
  want.insert(want.end(), {128009, 128006});
  for (int32_t v : tok.encode("assistant", false, false)) want.push_back(v);
  want.push_back(128007);
  for (int32_t v : tok.encode("\n\n", false, false)) want.push_back(v);
  EXPECT_EQ(ids, want);
}

// Generation stops at the format's end of turn: the special token after {content}.
TEST(BenchPrompts, TurnEndIsTheSpecialTokenAfterTheAnswer) {
  const std::string l3 = kShared + "/models/llama3-tokenizer";
  const kiln::data::Tokenizer llama3(l3);
  EXPECT_EQ(kiln::data::turn_end_id(chat_preset("llama3"), llama3, special_strings(llama3, l3)), 128009);  // <|eot_id|>
  const kiln::data::Tokenizer mistral(kShared + "/models/mistral-tokenizer");
  auto specials = special_strings(mistral, kShared + "/models/mistral-tokenizer");
  specials["<|end_of_turn|>"] = 32000;
  EXPECT_EQ(kiln::data::turn_end_id(chat_preset("openchat"), mistral, specials), 32000);
  const kiln::data::Tokenizer stories(kStories);
  const auto s = special_strings(stories, kStories);
  EXPECT_EQ(kiln::data::turn_end_id(chat_preset("fastchat"), stories, s), 2);  // {eos}
  EXPECT_EQ(kiln::data::turn_end_id(chat_preset("llama2c"), stories, s), 1);   // {bos}
  EXPECT_EQ(kiln::data::turn_end_id(chat_preset("plain"), stories, s), -1);    // a newline: text
  // llama2c is fastchat with the answer ended by BOS, in prompts and in training targets.
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  kiln::data::render_training(chat_preset("llama2c"), {{"user", "Hi"}, {"assistant", "Hello"}}, stories, s, ids, mask);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.back(), 1);
  EXPECT_EQ(mask.back(), 1);
  EXPECT_EQ(render(chat_preset("llama2c"), {{"user", "Hi"}}, stories, s), render(chat_preset("fastchat"), {{"user", "Hi"}}, stories, s));
}

TEST(BenchTable, ErrorsNameTheFileLineAndKey) {
  TempDir dir;
  auto table = [&](const std::string& body) { return dir.write("t.yaml", body); };
  EXPECT_NE(error_of([&] { read_table(table("chat: vicuna\ntasks: [{name: a, file: x, choices: [1, 2]}]\n")); })
                .find("t.yaml:1: key `chat`"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_table(table("tasks:\n  - name: a\n    file: x\n")); }).find("a choice task declares its answers"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_table(table("tasks:\n  - name: a\n    file: x\n    type: generate\n    metrics: [accuracy]\n")); })
                .find("t.yaml:5: key `tasks[0].metrics`: `accuracy` is not a metric of a generate task"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_table(table("tasks:\n  - name: a\n    file: x\n    choices: [1, 2]\n    answers: [1]\n")); })
                .find("answers"),
            std::string::npos);
  const BenchTable t = read_table(table("chat: {base: fastchat, system_prompt: Chat.}\ntasks:\n  - name: a\n    file: x.jsonl\n"
                                        "    choices: [yes, no]\n    metrics: [accuracy, f1_macro]\n"));
  EXPECT_EQ(t.chat.user, "USER: {content} ASSISTANT:");
  EXPECT_EQ(t.chat.system_prompt, "Chat.");
  EXPECT_EQ(t.tasks[0].file, (dir.path / "x.jsonl").string());
  EXPECT_EQ(t.tasks[0].score, (std::vector<std::string>{"accuracy", "f1_macro"}));
}

TEST(BenchRun, ChoiceLogLikelihoodsAreTheModelsOwn) {
  auto model = kiln::model::load_pretrained(kStories);
  const kiln::data::Tokenizer tok = kiln::model::load_tokenizer(kStories);
  const auto specials = special_strings(tok, kStories);
  TempDir dir;
  TaskSpec t;
  t.name = "story";
  t.choices = {"happy", "sad"};
  t.metrics = {"accuracy"};
  t.score = {"accuracy"};
  t.file = dir.write("s.jsonl", R"({"messages": [{"role": "user", "content": "Lily was {feeling}"}], "inputs": {"feeling": "very"}, "outputs": "happy", "meta": {"id": 7}})"
                                "\n");
  const ChatFormat chat = chat_preset("plain");
  const TaskResult r = run_task(model, tok, specials, chat, t, {});
  ASSERT_EQ(r.predictions.size(), 1u);
  // By hand: log p(answer | prompt) from one forward pass over prompt + answer.
  const auto prompt = render(chat, {{"user", "Lily was very"}}, tok, specials);
  for (const std::string& c : t.choices) {
    auto ids = prompt;
    const auto a = tok.encode(c, false, false);
    ids.insert(ids.end(), a.begin(), a.end());
    torch::NoGradGuard g;
    const at::Tensor logp = at::log_softmax(model->forward(at::tensor(std::vector<int64_t>(ids.begin(), ids.end())).unsqueeze(0)), -1)[0];
    double want = 0;
    for (size_t k = 0; k < a.size(); ++k) want += logp[int64_t(prompt.size() + k - 1)][a[k]].item<double>();
    EXPECT_NEAR(r.predictions[0]["loglikelihood"][c].get<double>(), want, 1e-4) << c;
  }
  const double h = r.predictions[0]["loglikelihood"]["happy"], s = r.predictions[0]["loglikelihood"]["sad"];
  EXPECT_EQ(r.metrics.at("accuracy"), h > s ? 1.0 : 0.0);
  EXPECT_EQ(r.predictions[0]["meta"]["id"], 7);
}

// Training renderings (method lm's task.chat): LLaMA-3's format marks each answer and its
// <|eot_id|> as targets and nothing else; with OpenChat's SentencePiece format, an answer encoded on
// its own after "GPT4 Correct Assistant: " cuts as the whole text does.
TEST(ChatTraining, Llama3TargetsAreTheAnswersAndTheirEndOfTurn) {
  const std::string dir = kShared + "/models/llama3-tokenizer";
  const kiln::data::Tokenizer tok(dir);
  const auto specials = special_strings(tok, dir);
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  kiln::data::render_training(chat_preset("llama3"), {{"user", "Hi"}, {"assistant", "Hello there"}}, tok, specials, ids, mask);
  ASSERT_EQ(ids.size(), mask.size());
  std::vector<int32_t> targets;
  for (size_t i = 0; i < ids.size(); ++i)
    if (mask[i]) targets.push_back(ids[i]);
  std::vector<int32_t> want = tok.encode("Hello there", false, false);
  want.push_back(128009);  // <|eot_id|>
  EXPECT_EQ(targets, want);
  // The prompt part is exactly the inference prompt.
  const auto prompt = render(chat_preset("llama3"), {{"user", "Hi"}}, tok, specials);
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + std::ptrdiff_t(prompt.size())), prompt);
}

TEST(ChatTraining, OpenChatAnswerCutsAsTheWholeText) {
  const std::string dir = kShared + "/models/mistral-tokenizer";
  const kiln::data::Tokenizer tok(dir);
  std::map<std::string, int32_t> specials = special_strings(tok, dir);
  specials["<|end_of_turn|>"] = 32000;  // OpenChat's, past Mistral's 32,000 pieces
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  kiln::data::render_training(chat_preset("openchat"), {{"user", "Hi"}, {"assistant", "Hello there"}}, tok, specials, ids, mask);
  const auto whole = tok.encode("GPT4 Correct Assistant: Hello there", false, false);
  const auto head = tok.encode("GPT4 Correct User: Hi", false, false);
  std::vector<int32_t> want = {tok.bos_id()};
  want.insert(want.end(), head.begin(), head.end());
  want.push_back(32000);
  want.insert(want.end(), whole.begin(), whole.end());
  want.push_back(32000);
  EXPECT_EQ(ids, want);
  size_t n = 0;
  for (uint8_t m : mask) n += m;
  EXPECT_EQ(n, tok.encode("Hello there", false, false).size() + 1);
}

// The presets against the models' own Jinja chat templates, rendered by transformers'
// apply_chat_template (tests/methods/lep/chat_reference.py, the project's .venv): LLaMA-3's, and
// OpenChat-3.5's over Mistral's tokenizer with OpenChat's tokenizer_config.json (its
// <|end_of_turn|> only there), on the conversations of that script.
TEST(ChatPresets, EqualTheModelsChatTemplates) {
  const std::string python = std::string(KILN_SOURCE_DIR) + "/.venv/bin/python";
  if (!fs::exists(python)) GTEST_SKIP() << python << " is missing: run scripts/install-deps.sh (it makes .venv)";
  if (std::system((python + " -c 'import transformers' 2> /dev/null").c_str()) != 0)
    GTEST_SKIP() << "transformers is not installed in .venv";
  TempDir dir;
  const fs::path openchat = dir.path / "openchat";
  fs::create_directories(openchat);
  for (const char* f : {"tokenizer.model", "tokenizer.json"})
    fs::copy_file(kShared + "/models/mistral-tokenizer/" + f, openchat / f);
  fs::copy_file(kShared + "/models/openchat-tokenizer/tokenizer_config.json", openchat / "tokenizer_config.json");
  const std::string llama3 = kShared + "/models/llama3-tokenizer";
  const std::string out = (dir.path / "ref.json").string();
  const std::string cmd = python + " " + KILN_SOURCE_DIR + "/tests/methods/lep/chat_reference.py " + out + " " + llama3 +
                          " " + openchat.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const json ref = json::parse(std::ifstream(out));
  const std::vector<std::vector<Message>> convs = {
      {{"user", "Привет! Как дела?"}},
      {{"user", "Привет! Как дела?"}, {"assistant", "Хорошо."}, {"user", "Repeat: it 's a charming and often affecting journey ."}},
      {{"system", "Be brief."}, {"user", "2 + 2 = ?"}}};
  for (const auto& [d, preset] : {std::pair<std::string, std::string>{llama3, "llama3"}, {openchat.string(), "openchat"}}) {
    const kiln::data::Tokenizer tok(d);
    const auto specials = special_strings(tok, d);
    for (size_t i = 0; i < convs.size(); ++i) {
      const auto got = render(chat_preset(preset), convs[i], tok, specials);
      EXPECT_EQ(json(got), ref[d][i]) << preset << " conversation " << i;
    }
  }
}

// Issue 32, point 5: llmtf_open's readings (RefalMachine/llmtf_open llmtf/tasks/darumeru.py @
// 0799651). Expected values: difflib's from Python's own difflib on the same strings
// (SequenceMatcher(None, a, b, autojunk=False), summed block sizes), SQuAD's worked by hand.
TEST(BenchMetrics, LlmtfReadings) {
  // difflib's blocks are not an LCS: "aaab" / "abaa" match "aa" only (2), an LCS is 3 ("aba").
  EXPECT_EQ(difflib_matched("aaab", "abaa"), 2);
  EXPECT_NEAR(lcs_ratio("aaab", "abaa"), 2.0 * 3 / 8, 1e-12);
  EXPECT_EQ(difflib_matched("abcd", "bcda"), 3);
  EXPECT_EQ(difflib_matched("the cat sat on the mat", "the mat sat on the cat"), 20);
  EXPECT_EQ(difflib_matched("Повтори текст", "Повтори тест"), 12);  // code points, not bytes
  EXPECT_EQ(difflib_matched("", "x"), 0);
  // SQuAD: articles go, ASCII punctuation goes without leaving a space, case folds.
  EXPECT_EQ(squad_normalize("The Eiffel Tower!"), "eiffel tower");
  EXPECT_EQ(squad_normalize("Санкт-Петербург"), "санктпетербург");
  EXPECT_EQ(normalize_answer("Санкт-Петербург"), "санкт петербург");  // kiln's own: a space
  EXPECT_DOUBLE_EQ(squad_f1("Санкт-Петербург", "Санкт Петербург"), 0.0);
  EXPECT_NEAR(squad_f1("a b c", "b c d e"), 2.0 / 3.0, 1e-12);  // "a" is an article: P 2/2, R 2/4
  EXPECT_DOUBLE_EQ(squad_f1("the", "an"), 1.0);              // both empty after normalising
  // The token-length score: min(p/s, s/p), s capped at max_new_tokens.
  EXPECT_DOUBLE_EQ(length_tokens(10, 20, 128), 0.5);
  EXPECT_DOUBLE_EQ(length_tokens(30, 20, 128), 20.0 / 30.0);
  EXPECT_DOUBLE_EQ(length_tokens(128, 300, 128), 1.0);
  EXPECT_DOUBLE_EQ(length_tokens(0, 20, 128), 0.0);
}

// PARus asked both ways: `swap` exchanges the two inputs and the gold; accuracy_both needs it.
TEST(BenchTable, SwapAsksBothOrders) {
  TempDir d;
  const std::string rec = d.write(
      "p.jsonl",
      R"({"messages": [{"role": "user", "content": "1. {choice1} 2. {choice2}"}], "inputs": {"choice1": "A", "choice2": "B"}, "outputs": "2"})"
      "\n");
  TaskSpec t;
  t.name = "P";
  t.file = rec;
  t.type = "choice";
  t.choices = {"1", "2"};
  t.swap = {"choice1", "choice2"};
  const auto r = read_records(t);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].messages[0].content, "1. A 2. B");
  EXPECT_EQ(r[0].swapped[0].content, "1. B 2. A");
  EXPECT_EQ(r[0].golds[0], "2");
  EXPECT_EQ(r[0].swapped_gold, "1");
  const std::string table = d.write("t.yaml", "tasks:\n  - {name: P, file: p.jsonl, type: choice, choices: [\"1\", \"2\"], "
                                               "metrics: [accuracy_both]}\n");
  EXPECT_NE(error_of([&] { read_table(table); }).find("swap"), std::string::npos);
}
