// LS-LLaMA's stores (data/schema.h):
//   classification        BOS + text [+ text_pair]; `labels` int32 per example.
//   token_classification  BOS + each word encoded on its own (sentencepiece's dummy prefix gives
//                         the ids of the space-joined sentence); per token `token_labels` (the
//                         word's label on its first sub-token, kIgnore elsewhere) and `word_ids`
//                         (kNoWord on specials); the gold word tags whole in the ragged
//                         `word_tags` / `word_offsets`, so span F1 sees words that truncation cut.
// data.kind auto: token_classification for CoNLL files, classification for the rest.
#pragma once
#include <memory>

#include "data/schema.h"

namespace kiln::methods::ls_llama {

std::unique_ptr<data::Encoder> make_encoder(const DataConfig& c);

}  // namespace kiln::methods::ls_llama
