#!/usr/bin/env bash
# Writes the starting corpus of every fuzz target (small real files from ../shared and the recipes,
# with the selector byte the readers' targets expect), into tests/*/corpus/<target>/seed-*.
# Run once when a target is added; scripts/fuzz.sh then grows the corpora it finds committed.
# Usage: tests/fuzz/seeds.sh BUILD_DIR   (a KILN_FUZZ build, for make_checkpoint_seed)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:?usage: seeds.sh BUILD_DIR}
shared=${KILN_SHARED_DIR:-$root/../shared}
data=$shared/data
c=$root/tests/fuzz/corpus
py=$root/.venv/bin/python
mkdir -p "$c"

# sel: the first byte of a readers input (fuzz_readers.cpp), then the first lines of a file.
seed() {  # seed TARGET NAME SELECTOR_BYTE FILE LINES
  mkdir -p "$c/$1"
  { printf "\\x$(printf %02x "$3")"; head -n "$5" "$4" | head -c 3000; } >"$c/$1/seed-$2"
}
seed fuzz_readers_delimited sst2-tsv 8 "$data/sst2/dev.tsv" 12
seed fuzz_readers_delimited agnews-csv 6 "$data/ag_news/train_sample_hf_format.csv" 4
seed fuzz_readers_delimited twitter-csv 14 "$data/twitter_financial_news_sentiment/sent_train.csv" 6
seed fuzz_readers_delimited wikiqa-pair 64 "$data/wikiqa/dev.tsv" 6
seed fuzz_readers_conll conll2003 0 "$data/conll2003/eng.testa" 40
seed fuzz_readers_conll crossner 2 "$data/crossner/ai/dev.txt" 40
seed fuzz_readers_text sst5 0 "$data/sst5/stsa.fine.dev" 10
seed fuzz_readers_text russian 2 "$data/russian_corpus/anna_karenina.txt" 12
seed fuzz_readers_text russian-blank 6 "$data/russian_corpus/corpus_500.txt" 12
mkdir -p "$c/fuzz_readers_json"
printf '\x00{"text": "a fine film", "label": "1"}\n{"text": "dull", "label": "0", "pair": "x"}\n' >"$c/fuzz_readers_json/seed-jsonl"
printf '\x02[{"conversations": [{"from": "human", "value": "Text: Paris is nice."}, {"from": "gpt", "value": "I have read this text."}, {"from": "human", "value": "What describes location in the text?"}, {"from": "gpt", "value": "[\\"Paris\\"]"}]}]\n' >"$c/fuzz_readers_json/seed-conversation"

f=$root/tests/methods/fractal/corpus/fuzz_fractal_readers
mkdir -p "$f"
{ printf '\x00'; head -n 1 "$shared/data/prm800k/raw_examples/prm800k-phase2-train-example.jsonl"; } | head -c 6000 >"$f/seed-prm800k"
{ printf '\x01'; head -n 8 "$data/wikiqa/dev.tsv"; } >"$f/seed-wikiqa"
printf '\x02{"context": "q?", "sentences": ["a.", "b."], "label": 1, "sentence_labels": [1, 0]}\n' >"$f/seed-bags"

mkdir -p "$c/fuzz_recipe"
for r in "$root"/recipes/tiny/*.yaml "$root"/recipes/fractal/*.yaml; do cp "$r" "$c/fuzz_recipe/seed-$(basename "$r")"; done
printf 'method: lm\nmodel: {path: m}\ndata: {train: t.txt, format: text}\ntrain: {steps: 2, lr: 1e-3}\nextends: [a.yaml]\n' >"$c/fuzz_recipe/seed-inline.yaml"

mkdir -p "$c/fuzz_hf_config"
cp "$shared/models/stories260K/hf/config.json" "$c/fuzz_hf_config/seed-stories260K.json"
cp "$shared/models/llama3-tokenizer/config.json" "$c/fuzz_hf_config/seed-llama3.json"
cp "$shared/models/mistral-tokenizer/config.json" "$c/fuzz_hf_config/seed-mistral.json"

mkdir -p "$c/fuzz_tokenizer_spm" "$c/fuzz_tokenizer_json" "$c/fuzz_safetensors" "$c/fuzz_checkpoint"
cp "$shared/models/stories260K/hf/tokenizer.model" "$c/fuzz_tokenizer_spm/seed-stories260K.model"
# LLaMA-3's tokenizer.json cut to its first 600 ids (and the merges among them) plus two specials.
"$py" - "$shared/models/llama3-tokenizer/tokenizer.json" "$c/fuzz_tokenizer_json/seed-llama3-600.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
vocab = {k: v for k, v in t["model"]["vocab"].items() if v < 600}
merges = []
for m in t["model"]["merges"]:
    a, b = m if isinstance(m, list) else m.split(" ", 1)
    if a in vocab and b in vocab and a + b in vocab:
        merges.append(m)
t["model"]["vocab"] = vocab
t["model"]["merges"] = merges
t["added_tokens"] = [dict(a, id=600 + i) for i, a in enumerate(t["added_tokens"][:2])]
json.dump(t, open(sys.argv[2], "w"), ensure_ascii=False)
PY
"$py" - "$c/fuzz_safetensors/seed-small.safetensors" <<'PY'
import json, struct, sys
tensors = [("w", "F32", [2, 3], struct.pack("<6f", *range(6))),
           ("b", "BF16", [4], b"\x80\x3f" * 4),
           ("i", "I64", [2], struct.pack("<2q", 1, -1))]
header, off = {"__metadata__": {"format": "pt"}}, 0
for name, dt, shape, raw in tensors:
    header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
    off += len(raw)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors))
PY
"$build/fuzz/make_checkpoint_seed" "$c/fuzz_checkpoint/seed-small.h5"
du -sh "$c"/* "$f"
