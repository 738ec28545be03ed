#!/usr/bin/env python3
"""Reference token ids for kiln's tokenizer tests, from the libraries users run.

Usage: tokenizer_reference.py IN.json OUT.json
IN: {"tokenizers": {"name": "path/to/tokenizer.json or tokenizer.model"}, "texts": ["...", ...]}
OUT: {"name": [[ids of text 0], [ids of text 1], ...], "versions": {...}}
tokenizer.json goes through Hugging Face `tokenizers` (no special tokens added), tokenizer.model
through `sentencepiece` (no BOS/EOS), as kiln's encode(text, add_bos=False) is compared with them.
"""
import json
import sys

import sentencepiece
import tokenizers


def main():
    spec = json.load(open(sys.argv[1], encoding="utf-8"))
    out = {"versions": {"tokenizers": tokenizers.__version__, "sentencepiece": sentencepiece.__version__}}
    for name, path in spec["tokenizers"].items():
        if path.endswith(".json"):
            tok = tokenizers.Tokenizer.from_file(path)
            out[name] = [tok.encode(t, add_special_tokens=False).ids for t in spec["texts"]]
        else:
            sp = sentencepiece.SentencePieceProcessor(model_file=path)
            out[name] = [sp.encode(t) for t in spec["texts"]]
    json.dump(out, open(sys.argv[2], "w", encoding="utf-8"))


if __name__ == "__main__":
    main()
