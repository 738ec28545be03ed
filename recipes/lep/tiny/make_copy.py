#!/usr/bin/env python3
"""The copy task (LEP's calibration and DaruCopy): repeat a text word for word.

Usage: make_copy.py TEXT OUT.jsonl (--conversations | --records) [--n N] [--prompt P] [--min C] [--max C]
From the lines of TEXT that hold C characters, min <= C <= max (default 20..200), the first N
(default all): --conversations writes training rows for `method: lm` ({"conversations": [human: the
prompt, gpt: the text]}); --records writes benchmark records for `kiln lep bench`
({messages, inputs: {text}, outputs: the text, meta: {id}}). The prompt holds {text} (default
Russian: "Повтори текст: {text}").
"""
import json
import sys


def main():
    args = sys.argv[1:]
    def opt(name, default):
        return args[args.index(name) + 1] if name in args else default
    text, out = args[0], args[1]
    n = int(opt("--n", "0"))
    prompt = opt("--prompt", "Повтори текст: {text}")
    lo, hi = int(opt("--min", "20")), int(opt("--max", "200"))
    with open(text, encoding="utf-8") as f:
        lines = [l.strip() for l in f if lo <= len(l.strip()) <= hi]
    if n:
        lines = lines[:n]
    with open(out, "w", encoding="utf-8") as f:
        for i, t in enumerate(lines):
            if "--records" in args:
                row = {"messages": [{"role": "user", "content": prompt}], "inputs": {"text": t}, "outputs": t,
                       "meta": {"id": i}}
            else:
                row = {"conversations": [{"from": "human", "value": prompt.replace("{text}", t)},
                                         {"from": "gpt", "value": t}]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{out}: {len(lines)} copy {'records' if '--records' in args else 'conversations'}")


if __name__ == "__main__":
    main()
