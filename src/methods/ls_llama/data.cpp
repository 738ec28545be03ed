#include "methods/ls_llama/data.h"

#include "core/config.h"
#include "core/error.h"
#include "data/align.h"
#include "data/tokenizer.h"

namespace kiln::methods::ls_llama {

namespace {

using data::DType;
using data::Per;

class SequenceEncoder : public data::Encoder {
 public:
  std::string kind() const override { return "classification"; }
  std::vector<data::Field> fields() const override { return {{"labels", DType::i32, Per::example}}; }
  void check(const DataConfig& c) const override {
    if (c.format == "conll")
      input_error("key `data.kind`: CoNLL files make a token_classification store, not `classification`");
    if (c.format != "tsv" && c.format != "csv" && c.format != "sst" && c.format != "jsonl")
      input_error("key `data.format`: method ls_llama classifies tsv, csv, sst, jsonl or conll records, not `{}`",
                  c.format);
  }
  std::vector<std::string> labels(const DataConfig& c, const std::vector<data::Record>& train,
                                   const std::vector<data::Record>& eval) const override {
    return data::build_label_map(false, c.labels, train, eval);
  }
  void encode(const data::Record& rec, const data::EncodeContext& ctx, data::Example& out) const override {
    out.ids = ctx.tok.encode(rec.text, true);
    if (!rec.text_pair.empty()) {
      auto p = ctx.tok.encode(rec.text_pair, false);
      out.ids.insert(out.ids.end(), p.begin(), p.end());
    }
    out.put<int32_t>("labels").push_back(ctx.label_id(rec.label));
  }
};

class TokenEncoder : public data::Encoder {
 public:
  std::string kind() const override { return "token_classification"; }
  std::vector<data::Field> fields() const override {
    return {{"token_labels", DType::i32, Per::token, double(data::kIgnore)},
            {"word_ids", DType::i32, Per::token, double(data::kNoWord)},
            {"word_tags", DType::i32, Per::ragged, 0, "word_offsets"}};
  }
  void check(const DataConfig& c) const override {
    if (c.format != "conll")
      input_error("key `data.kind`: token_classification reads CoNLL files (data.format: conll), not `{}`", c.format);
  }
  std::vector<std::string> labels(const DataConfig& c, const std::vector<data::Record>& train,
                                   const std::vector<data::Record>& eval) const override {
    return data::build_label_map(true, c.labels, train, eval);
  }
  void encode(const data::Record& rec, const data::EncodeContext& ctx, data::Example& out) const override {
    out.ids = {ctx.tok.bos_id()};
    std::vector<int32_t> wid = {data::kNoWord}, wl;
    for (size_t w = 0; w < rec.words.size(); ++w) {
      // Word by word: sentencepiece's dummy prefix gives each word the `▁` it has after a space,
      // so the ids equal those of the space-joined sentence and the word boundaries are exact.
      auto p = ctx.tok.encode(rec.words[w], false);
      out.ids.insert(out.ids.end(), p.begin(), p.end());
      wid.insert(wid.end(), p.size(), int32_t(w));
      wl.push_back(ctx.label_id(rec.tags[w]));
    }
    // Labels before truncation: the surviving sub-tokens of a word cut on the left stay ignored.
    out.put<int32_t>("token_labels") = data::align_word_labels(wid, wl);
    out.put<int32_t>("word_ids") = wid;
    out.put<int32_t>("word_tags") = wl;
  }
};

}  // namespace

std::unique_ptr<data::Encoder> make_encoder(const DataConfig& c) {
  if (c.kind == "token_classification" || (c.kind == "auto" && c.format == "conll"))
    return std::make_unique<TokenEncoder>();
  if (c.kind == "classification" || c.kind == "auto") return std::make_unique<SequenceEncoder>();
  input_error("key `data.kind`: method ls_llama makes `classification` or `token_classification` stores (or `auto`), "
              "not `{}`",
              c.kind);
}

}  // namespace kiln::methods::ls_llama
