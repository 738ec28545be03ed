// Readers on the real files of ../shared/data (counts from its SOURCES.md, checked independently
// with Python's csv module), malformed input for every reader (the message must name file:line),
// and the word-label alignment that token classification relies on.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "data/align.h"
#include "data/readers.h"

using namespace kiln::data;

namespace {

const std::string kData = std::string(KILN_SHARED_DIR) + "/data/";

std::string temp_file(const std::string& name, const std::string& content) {
  auto dir = std::filesystem::path(testing::TempDir()) / "kiln_readers";
  std::filesystem::create_directories(dir);
  auto p = (dir / name).string();
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

// Runs f, expects an InputError whose message contains `needle`; returns the message.
template <typename F>
std::string expect_input_error(F f, const std::string& needle) {
  try {
    f();
  } catch (const kiln::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no InputError; expected one containing " << needle;
  return "";
}

std::map<std::string, int> label_counts(const std::vector<Record>& r) {
  std::map<std::string, int> m;
  for (auto& x : r) ++m[x.label];
  return m;
}

}  // namespace

TEST(Conll, EngTestaCounts) {
  ReadOptions o;
  ReadStats st;
  auto recs = read_conll(kData + "conll2003/eng.testa", o, &st);
  ASSERT_EQ(recs.size(), 3250u);
  size_t tokens = 0;
  for (auto& r : recs) {
    ASSERT_EQ(r.words.size(), r.tags.size());
    tokens += r.words.size();
  }
  EXPECT_EQ(tokens, 51362u);
  EXPECT_EQ(st.records, 3250);
  EXPECT_EQ(st.skipped, 0);
  // The first sentence: "CRICKET - LEICESTERSHIRE TAKE OVER AT TOP AFTER INNINGS VICTORY ." at line 3.
  EXPECT_EQ(recs[0].words[0], "CRICKET");
  EXPECT_EQ(recs[0].line, 3);
  // IOB1 I-ORG opening an entity becomes B-ORG in BIO; `keep` leaves the file's tags.
  EXPECT_EQ(recs[0].tags[2], "B-ORG");
  o.tag_scheme = "keep";
  auto raw = read_conll(kData + "conll2003/eng.testa", o);
  EXPECT_EQ(raw[0].tags[2], "I-ORG");
  for (auto& r : recs)
    for (size_t i = 0; i < r.tags.size(); ++i) {
      if (r.tags[i][0] == 'I') {
        ASSERT_TRUE(i > 0 && r.tags[i - 1].substr(1) == r.tags[i].substr(1)) << r.where();
      }
    }
}

TEST(Conll, TrainAndTabSeparatedCrossNer) {
  ReadOptions o;
  auto train = read_conll(kData + "conll2003/eng.train", o);
  size_t tokens = 0;
  for (auto& r : train) tokens += r.words.size();
  EXPECT_EQ(train.size(), 14041u);
  EXPECT_EQ(tokens, 203621u);
  auto ai = read_conll(kData + "crossner/ai/dev.txt", o);
  tokens = 0;
  for (auto& r : ai) tokens += r.words.size();
  EXPECT_EQ(ai.size(), 350u);
  EXPECT_EQ(tokens, 10919u);
}

TEST(Conll, MalformedNamesFileLine) {
  std::string p = temp_file("bad.conll", "-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\n\n"
                                         "German JJ I-NP I-MISC\ncall NN I-NP\n\nPeter NNP I-NP X-PER\n");
  ReadOptions o;
  expect_input_error([&] { read_conll(p, o); }, p + ":7: 3 columns where the file's first line has 4");
  o.skip_bad = true;
  ReadStats st;
  auto recs = read_conll(p, o, &st);
  ASSERT_EQ(recs.size(), 1u);  // both bad sentences skipped, whole
  EXPECT_EQ(st.skipped, 2);
  EXPECT_NE(st.first_skip.find(":7:"), std::string::npos);
  std::string q = temp_file("badtag.conll", "Peter\tX-PER\n");
  expect_input_error([&] { read_conll(q, ReadOptions{}); }, q + ":1: tag `X-PER` is not O, B-<type> or I-<type>");
  std::string r = temp_file("onecol.conll", "a O\nlonely\n");
  expect_input_error([&] { read_conll(r, ReadOptions{}); }, r + ":2: a CoNLL line needs a token and a tag");
}

TEST(Delimited, Sst2DevTsv) {
  ReadOptions o;  // GLUE: header `sentence\tlabel`, tab, no quoting
  auto recs = read_delimited(kData + "sst2/dev.tsv", o);
  ASSERT_EQ(recs.size(), 872u);
  auto c = label_counts(recs);
  EXPECT_EQ(c["1"], 444);
  EXPECT_EQ(c["0"], 428);
  EXPECT_EQ(recs[0].text, "it 's a charming and often affecting journey .");  // trailing space trimmed
  EXPECT_EQ(recs[0].line, 2);
}

TEST(Delimited, TwitterFinancialCsvCrlfQuoted) {
  ReadOptions o;
  o.delimiter = ',';
  o.quoting = true;
  o.text_field = "text";
  auto recs = read_delimited(kData + "twitter_financial_news_sentiment/sent_train.csv", o);
  ASSERT_EQ(recs.size(), 9543u);
  auto c = label_counts(recs);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c["0"], 1442);
  EXPECT_EQ(c["1"], 1923);
  EXPECT_EQ(c["2"], 6178);
  EXPECT_EQ(recs[2].text, "$CX - Cemex cut at Credit Suisse, J.P. Morgan on weak building outlook https://t.co/KN1g4AWFIb");
  EXPECT_EQ(recs[2].line, 4);
  for (auto& r : recs) ASSERT_EQ(r.text.find('\r'), std::string::npos) << r.where();
}

TEST(Delimited, HeaderlessCsvAndTsvPairs) {
  ReadOptions o;
  o.delimiter = ',', o.quoting = true, o.header = false, o.text_field = "0", o.label_field = "1";
  auto ag = read_delimited(kData + "ag_news/train_sample_hf_format.csv", o);
  ASSERT_EQ(ag.size(), 5000u);
  auto c = label_counts(ag);
  EXPECT_EQ(c["0"], 1259);
  EXPECT_EQ(c["3"], 1203);
  ReadOptions w;
  w.header = false, w.text_field = "0", w.text_pair_field = "1", w.label_field = "2";
  auto wiki = read_delimited(kData + "wikiqa/dev.tsv", w);
  ASSERT_EQ(wiki.size(), 1126u);
  EXPECT_EQ(label_counts(wiki)["1"], 136);
  EXPECT_FALSE(wiki[0].text_pair.empty());
  ReadOptions named;
  named.header = false;  // a name without a header is a recipe error
  expect_input_error([&] { read_delimited(kData + "wikiqa/dev.tsv", named); }, "must be a 0-based column index");
}

TEST(Delimited, SplitQuotedFields) {
  EXPECT_EQ(split_delimited("a,\"b, c\",\"say \"\"hi\"\"\"", ',', true),
            (std::vector<std::string>{"a", "b, c", "say \"hi\""}));
  EXPECT_EQ(split_delimited("a\t\"b\"", '\t', false), (std::vector<std::string>{"a", "\"b\""}));
  EXPECT_EQ(split_delimited("x,", ',', true), (std::vector<std::string>{"x", ""}));
  // A quoted field may hold a newline: the record keeps the line where it starts.
  std::string p = temp_file("multi.csv", "text,label\r\n\"two\r\nlines\",1\r\nnext,0\r\n");
  ReadOptions o;
  o.delimiter = ',', o.quoting = true, o.text_field = "text";
  auto recs = read_delimited(p, o);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].text, "two\r\nlines");
  EXPECT_EQ(recs[0].line, 2);
  EXPECT_EQ(recs[1].line, 4);
}

TEST(Delimited, MalformedNamesFileLine) {
  std::string p = temp_file("bad.tsv", "sentence\tlabel\ngood one\t1\nno label here\n\tempty text\t0\nfine\t0\n");
  ReadOptions o;
  expect_input_error([&] { read_delimited(p, o); }, p + ":3: 1 fields where 2 expected: `no label here`");
  o.skip_bad = true;
  ReadStats st;
  auto recs = read_delimited(p, o, &st);
  EXPECT_EQ(recs.size(), 2u);
  EXPECT_EQ(st.skipped, 2);
  std::string q = temp_file("bad.csv", "text,label\nok,1\n\"unterminated,0\n");
  ReadOptions c;
  c.delimiter = ',', c.quoting = true, c.text_field = "text";
  expect_input_error([&] { read_delimited(q, c); }, q + ":3: unterminated quoted field");
  ReadOptions typo;
  typo.text_field = "sentense";
  expect_input_error([&] { read_delimited(p, typo); }, "column `sentense` is not in the header");
}

TEST(Sst, FineGrainedTrain) {
  auto recs = read_sst(kData + "sst5/stsa.fine.train", ReadOptions{});
  ASSERT_EQ(recs.size(), 8544u);
  auto c = label_counts(recs);
  EXPECT_EQ(c["0"], 1092);
  EXPECT_EQ(c["1"], 2218);
  EXPECT_EQ(c["2"], 1624);
  EXPECT_EQ(c["3"], 2322);
  EXPECT_EQ(c["4"], 1288);
  std::string p = temp_file("bad.sst", "1 a fine film\n3\n");
  expect_input_error([&] { read_sst(p, ReadOptions{}); }, p + ":2: an SST line is `<label> <sentence>`");
}

TEST(Jsonl, FieldsFromRecipeAndErrors) {
  std::string p = temp_file("d.jsonl",
                            "{\"meta\": {\"text\": \"first\"}, \"y\": 3}\n\n{\"meta\": {\"text\": \"second\"}, \"y\": \"pos\"}\n"
                            "{\"meta\": {\"text\": \"third\"}, \"y\": true}\n");
  ReadOptions o;
  o.text_field = "meta.text", o.label_field = "y";
  auto recs = read_jsonl(p, o);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].label, "3");
  EXPECT_EQ(recs[1].label, "pos");
  EXPECT_EQ(recs[2].label, "true");
  EXPECT_EQ(recs[1].line, 3);
  std::string q = temp_file("bad.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": 1\n"
                                         "{\"text\": 5, \"label\": 1}\n");
  ReadOptions d;
  d.text_field = "text";
  expect_input_error([&] { read_jsonl(q, d); }, q + ":2: not JSON");
  d.skip_bad = true;
  ReadStats st;
  EXPECT_EQ(read_jsonl(q, d, &st).size(), 1u);
  EXPECT_EQ(st.skipped, 2);
  d.skip_bad = false;
  std::string r = temp_file("bad2.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"text\": 5, \"label\": 1}\n");
  expect_input_error([&] { read_jsonl(r, d); }, r + ":2: field `text` (data.text_field) missing or not a string");
}

TEST(Text, RussianCorpusDocuments) {
  ReadOptions o;
  auto anna = read_text(kData + "russian_corpus/anna_karenina.txt", o);
  EXPECT_EQ(anna.size(), 7821u);
  auto besy = read_text(kData + "russian_corpus/besy_dostoevsky.txt", o);  // CRLF
  EXPECT_EQ(besy.size(), 5896u);
  for (auto& r : besy) ASSERT_EQ(r.text.find('\r'), std::string::npos);
  o.skip_lines = 1;  // corpus_500: a `text` header line, then one article per line
  auto news = read_text(kData + "russian_corpus/corpus_500.txt", o);
  EXPECT_EQ(news.size(), 499u);
  EXPECT_EQ(news[0].line, 2);
  std::string p = temp_file("paras.txt", "one\ntwo\n\n\nthree\n");
  ReadOptions b;
  b.document_split = "blank_line";
  auto paras = read_text(p, b);
  ASSERT_EQ(paras.size(), 2u);
  EXPECT_EQ(paras[0].text, "one\ntwo");
  EXPECT_EQ(paras[1].line, 5);
  // Plain text has no malformed lines; a missing file is the error it can have.
  expect_input_error([&] { read_text("/nonexistent/corpus.txt", o); }, "/nonexistent/corpus.txt: cannot open");
}

TEST(Conversation, UniversalNerListAndJsonl) {
  const std::string conv =
      "{\"id\": \"1\", \"conversations\": [\n"
      "  {\"from\": \"human\", \"value\": \"Text: Apple hired Tim.\"},\n"
      "  {\"from\": \"gpt\", \"value\": \"I've read this text.\"},\n"
      "  {\"from\": \"human\", \"value\": \"What describes organization in the text?\"},\n"
      "  {\"from\": \"gpt\", \"value\": \"[\\\"Apple\\\"]\"}]}";
  std::string p = temp_file("uniner.json", "[\n" + conv + ",\n" + conv + "\n]\n");
  auto recs = read_conversations(p, ReadOptions{});
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].line, 2);
  EXPECT_EQ(recs[1].line, 7);
  ASSERT_EQ(recs[0].turns.size(), 4u);
  EXPECT_EQ(recs[0].turns[3].value, "[\"Apple\"]");
  std::string flat = conv;
  flat.erase(std::remove(flat.begin(), flat.end(), '\n'), flat.end());
  std::string q = temp_file("uniner.jsonl", flat + "\n" + flat + "\n");
  EXPECT_EQ(read_conversations(q, ReadOptions{}).size(), 2u);
}

TEST(Conversation, MalformedNamesFileLine) {
  std::string good = "{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", \"value\": \"a\"}]}";
  std::string p = temp_file("bad1.json", "[\n" + good + ",\n{\"conversations\": [{\"from\": \"gpt\", \"value\": \"a\"}]}\n]");
  expect_input_error([&] { read_conversations(p, ReadOptions{}); }, p + ":3: turn 0 is from `gpt`, expected `human`");
  std::string q = temp_file("bad2.json", "[\n" + good + ",\n\n{\"conversations\": [1,, 2]}\n]");
  expect_input_error([&] { read_conversations(q, ReadOptions{}); }, q + ":4: not JSON");
  ReadOptions skip;
  skip.skip_bad = true;
  ReadStats st;
  EXPECT_EQ(read_conversations(p, skip, &st).size(), 1u);
  EXPECT_EQ(st.skipped, 1);
  std::string r = temp_file("bad3.json", "[\n" + good + ",\n" + good);
  expect_input_error([&] { read_conversations(r, ReadOptions{}); }, r + ":3: expected `,` or `]`");
}

TEST(Align, FirstSubTokenCarriesTheLabel) {
  // BOS, word 0 in 1 piece, word 1 in 3 pieces, word 2 in 2 pieces, EOS.
  std::vector<int32_t> wid = {kNoWord, 0, 1, 1, 1, 2, 2, kNoWord};
  std::vector<int32_t> labels = {3, 0, 5};
  EXPECT_EQ(align_word_labels(wid, labels), (std::vector<int32_t>{kIgnore, 3, 0, kIgnore, kIgnore, 5, kIgnore, kIgnore}));
  // Back to words: the prediction at each word's first sub-token; a word cut away gets `missing`.
  std::vector<int32_t> preds = {9, 3, 1, 8, 8, 5, 7, 9};
  EXPECT_EQ(word_predictions(wid, preds, 4, 0), (std::vector<int32_t>{3, 1, 5, 0}));
  EXPECT_THROW(align_word_labels({0, 4}, labels), kiln::InternalError);
}

TEST(Align, Iob1ToBio) {
  EXPECT_EQ(iob1_to_bio({"I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "O"}),
            (std::vector<std::string>{"B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG", "O"}));
  std::vector<std::string> bio = {"B-PER", "I-PER", "O", "B-LOC"};
  EXPECT_EQ(iob1_to_bio(bio), bio);
  EXPECT_TRUE(valid_tag("O"));
  EXPECT_TRUE(valid_tag("B-MISC"));
  EXPECT_FALSE(valid_tag("X-PER"));
  EXPECT_FALSE(valid_tag("B-"));
}

TEST(Readers, InvalidUtf8IsAnErrorAtItsLineOrReplaced) {
  EXPECT_EQ(kiln::data::invalid_utf8_at("plain, Привет, 😀"), std::string::npos);
  EXPECT_EQ(kiln::data::invalid_utf8_at("ab\xff"), 2u);
  EXPECT_EQ(kiln::data::invalid_utf8_at("\xC0\xAF"), 0u);      // overlong '/'
  EXPECT_EQ(kiln::data::invalid_utf8_at("x\xED\xA0\x80"), 1u); // a UTF-16 surrogate
  EXPECT_EQ(kiln::data::invalid_utf8_at("\xF4\x90\x80\x80"), 0u);  // past U+10FFFF
  EXPECT_EQ(kiln::data::invalid_utf8_at("\xE2\x82"), 0u);      // cut short
  EXPECT_EQ(kiln::data::replace_invalid_utf8("a\xff" "b"), "a\xEF\xBF\xBD" "b");
  // A CoNLL sentence whose third word is bad: named at that word's line.
  kiln::data::Record r;
  r.file = "x.conll", r.line = 10;
  r.words = {"EU", "says", "Bonn\xff"};
  r.tags = {"I-ORG", "O", "I-LOC"};
  std::vector<kiln::data::Record> recs{r};
  try {
    kiln::data::check_utf8(recs, false);
    FAIL() << "no error";
  } catch (const kiln::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("x.conll:12: invalid UTF-8 (byte 0xFF"), std::string::npos) << e.what();
  }
  EXPECT_EQ(kiln::data::check_utf8(recs, true), 1);
  EXPECT_EQ(recs[0].words[2], "Bonn\xEF\xBF\xBD");
}
