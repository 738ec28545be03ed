// Word-level labels onto sub-tokens, and the tag schemes of CoNLL files. Token classification
// (LS-unLLaMA's NER) labels only the first sub-token of each word; the other sub-tokens and the
// special tokens get kIgnore, so the loss and the metrics see one prediction per word.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::data {

constexpr int32_t kIgnore = -100;  // PyTorch's cross-entropy ignore_index, as the HF recipes use
constexpr int32_t kNoWord = -1;    // word id of a special token (BOS, EOS, padding)

// word_ids[t]: the word token t belongs to, or kNoWord. Returns one label per token: the word's
// label on its first sub-token, kIgnore elsewhere. Sub-tokens of one word must be adjacent; a word
// id outside word_labels is an internal error.
std::vector<int32_t> align_word_labels(const std::vector<int32_t>& word_ids, const std::vector<int32_t>& word_labels);

// Maps per-token predictions back to words: the prediction at each word's first sub-token;
// words with no sub-token left (truncated away) get `missing`.
std::vector<int32_t> word_predictions(const std::vector<int32_t>& word_ids, const std::vector<int32_t>& token_preds,
                                      int64_t num_words, int32_t missing);

// O, B-<type> or I-<type>.
bool valid_tag(const std::string& tag);
// IOB1 (CoNLL-2003: B- only between two adjacent entities of one type) to BIO (every entity starts
// with B-). BIO input comes back unchanged.
std::vector<std::string> iob1_to_bio(const std::vector<std::string>& tags);

}  // namespace kiln::data
