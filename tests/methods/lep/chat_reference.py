#!/usr/bin/env python3
"""Reference prompts for kiln's conversation formats: transformers' apply_chat_template.

Usage: chat_reference.py OUT.json MODEL_DIR...
For each model folder (its tokenizer and tokenizer_config.json's chat_template), the ids of each
conversation below with add_generation_prompt=True, as {dir: [[ids], ...]}.
"""
import json
import sys

import transformers

CONVERSATIONS = [
    [{"role": "user", "content": "Привет! Как дела?"}],
    [{"role": "user", "content": "Привет! Как дела?"}, {"role": "assistant", "content": "Хорошо."},
     {"role": "user", "content": "Repeat: it 's a charming and often affecting journey ."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2 = ?"}],
]


def ids_of(tok, conv):
    out = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def main():
    result = {"transformers": transformers.__version__}
    for d in sys.argv[2:]:
        tok = transformers.AutoTokenizer.from_pretrained(d)
        result[d] = [ids_of(tok, c) for c in CONVERSATIONS]
    json.dump(result, open(sys.argv[1], "w"), ensure_ascii=False)


if __name__ == "__main__":
    main()
