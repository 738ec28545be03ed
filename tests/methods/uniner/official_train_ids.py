"""Token ids of one training conversation as UniversalNER's official train.py makes them.

universal-ner/universal-ner src/train/fastchat/train/train.py, preprocess2 (commit 7a20a9c), with
its ie_as_qa template (src/train/fastchat/conversation.py): the first human turn is
`{system} USER: {value}` tokenized with BOS, later ones `USER: {value}`, each gpt turn `ASSISTANT: `
then `{value}</s>`, each piece a separate call of LlamaTokenizer (use_fast=False, whose legacy
SentencePiece encoding is sp.encode of the piece; `</s>` is split out as the EOS id). The
question shuffle is left out (test_uniner.cpp checks it separately). Prints the ids and the loss
mask that test_uniner.cpp's OfficialTrainingPieces test holds.
Run: .venv/bin/python tests/methods/uniner/official_train_ids.py ../shared/models/llama2-tokenizer/tokenizer.model
"""
import sys

import sentencepiece as spm

sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
system = "A virtual assistant answers questions from a user based on the provided paragraph."
source = [("human", "Text: EU rejects German call."), ("gpt", "I've read this text."),
          ("human", "What describes organization in the text?"), ("gpt", '["EU"]'),
          ("human", "What describes person in the text?"), ("gpt", "[]")]
ids, mask = [], []
for j, (who, value) in enumerate(source):
    if j == 0:
        piece = [sp.bos_id()] + sp.encode(system + " " + "USER: " + value)
        ids += piece; mask += [0] * len(piece)
    elif who == "human":
        piece = sp.encode("USER: " + value)
        ids += piece; mask += [0] * len(piece)
    else:
        piece = sp.encode("ASSISTANT: ")
        ids += piece; mask += [0] * len(piece)
        piece = sp.encode(value) + [sp.eos_id()]
        ids += piece; mask += [1] * len(piece)
print("ids ", ", ".join(map(str, ids)))
print("mask", "".join(map(str, mask)))
