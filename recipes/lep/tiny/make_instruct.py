#!/usr/bin/env python3
"""The English instruction set of the tiny LEP pipeline: SST-2 answered in words and a copy task.

Usage: make_instruct.py SST2_DIR OUT_DIR [--sentiment N] [--copy M]
Writes, from SST-2's train.tsv and dev.tsv (sentence<TAB>label, header line):
  OUT_DIR/train.jsonl   conversations for `method: lm` (format: conversation): the first N (40000)
                        train sentences asked for their sentiment (answer `positive` / `negative`),
                        and M (10000) other train sentences of 20-120 characters to repeat word for
                        word, spread evenly among them;
  OUT_DIR/dev.jsonl     the same two tasks on the dev split, as conversations (training's eval split);
  OUT_DIR/sst2_words.jsonl, OUT_DIR/copy_en.jsonl
                        the dev split as benchmark records ({messages, inputs, outputs, meta}, the
                        format `kiln lep bench` reads): all 872 sentiment questions, and the first
                        200 dev sentences of at most 120 characters to copy.
Deterministic: no sampling, the files' order.
"""
import json
import sys

SENTIMENT = "Is this review positive or negative? {sentence}"
COPY = "Repeat the text: {text}"
WORDS = {"0": "negative", "1": "positive"}


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return [(s.strip(), label) for s, label in rows]


def conv(question, answer):
    return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


def main():
    sst2, out = sys.argv[1], sys.argv[2]
    arg = lambda name, default: int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default
    n, m = arg("--sentiment", 40000), arg("--copy", 10000)
    train = read_tsv(f"{sst2}/train.tsv")
    dev = read_tsv(f"{sst2}/dev.tsv")
    sentiment = train[:n]
    short = [s for s, _ in train[n:] if 20 <= len(s) <= 120][:m]
    rows, k = [], 0
    for i, (s, label) in enumerate(sentiment):  # interleaved, so every batch holds both tasks
        rows.append(conv(SENTIMENT.format(sentence=s), WORDS[label]))
        while k < len(short) and k * len(sentiment) <= i * len(short):
            rows.append(conv(COPY.format(text=short[k]), short[k]))
            k += 1
    rows += [conv(COPY.format(text=t), t) for t in short[k:]]
    with open(f"{out}/train.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(f"{out}/sst2_words.jsonl", "w", encoding="utf-8") as f:
        for i, (s, label) in enumerate(dev):
            f.write(json.dumps({"messages": [{"role": "user", "content": SENTIMENT}],
                                "inputs": {"sentence": s}, "outputs": WORDS[label], "meta": {"id": i}},
                               ensure_ascii=False) + "\n")
    copy = [s for s, _ in dev if 20 <= len(s) <= 120][:200]
    with open(f"{out}/dev.jsonl", "w", encoding="utf-8") as f:
        for r in [conv(SENTIMENT.format(sentence=s), WORDS[label]) for s, label in dev] + \
                 [conv(COPY.format(text=s), s) for s in copy]:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(f"{out}/copy_en.jsonl", "w", encoding="utf-8") as f:
        for i, s in enumerate(copy):
            f.write(json.dumps({"messages": [{"role": "user", "content": COPY}], "inputs": {"text": s},
                                "outputs": s, "meta": {"id": i}}, ensure_ascii=False) + "\n")
    print(f"{out}/train.jsonl: {len(rows)} conversations; sst2_words.jsonl: {len(dev)}; copy_en.jsonl: {len(copy)}")


if __name__ == "__main__":
    main()
