#include "data/align.h"

#include "core/error.h"

namespace kiln::data {

std::vector<int32_t> align_word_labels(const std::vector<int32_t>& word_ids, const std::vector<int32_t>& word_labels) {
  std::vector<int32_t> out(word_ids.size(), kIgnore);
  int32_t prev = kNoWord;
  for (size_t t = 0; t < word_ids.size(); ++t) {
    int32_t w = word_ids[t];
    if (w == kNoWord) {
      prev = kNoWord;
      continue;
    }
    KILN_CHECK(w >= 0 && size_t(w) < word_labels.size(), "token {} has word id {} of {} words", t, w,
               word_labels.size());
    if (w != prev) out[t] = word_labels[size_t(w)];
    prev = w;
  }
  return out;
}

std::vector<int32_t> word_predictions(const std::vector<int32_t>& word_ids, const std::vector<int32_t>& token_preds,
                                      int64_t num_words, int32_t missing) {
  KILN_CHECK(word_ids.size() == token_preds.size(), "{} word ids, {} predictions", word_ids.size(), token_preds.size());
  std::vector<int32_t> out(size_t(num_words), missing);
  std::vector<char> seen(size_t(num_words), 0);
  for (size_t t = 0; t < word_ids.size(); ++t) {
    int32_t w = word_ids[t];
    if (w < 0 || w >= num_words || seen[size_t(w)]) continue;
    seen[size_t(w)] = 1;
    out[size_t(w)] = token_preds[t];
  }
  return out;
}

bool valid_tag(const std::string& tag) {
  if (tag == "O") return true;
  return tag.size() > 2 && (tag[0] == 'B' || tag[0] == 'I') && tag[1] == '-';
}

std::vector<std::string> iob1_to_bio(const std::vector<std::string>& tags) {
  std::vector<std::string> out = tags;
  for (size_t i = 0; i < tags.size(); ++i) {
    if (tags[i].size() < 2 || tags[i][0] != 'I') continue;
    std::string type = tags[i].substr(2);
    bool continues = i > 0 && tags[i - 1].size() > 2 && tags[i - 1].substr(2) == type;
    if (!continues) out[i] = "B-" + type;
  }
  return out;
}

}  // namespace kiln::data
