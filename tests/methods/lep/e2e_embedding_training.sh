#!/usr/bin/env bash
# LEP's embedding-only training (method lep) on 2 ranks with ZeRO-1: stories260K extended with a
# small Russian BPE (kiln tokenizer train/extend, kiln lep init), a few steps on Russian text; the
# merged export differs from the initialised model in the input embeddings and the LM head only,
# every other tensor bit-identical (compared byte for byte); the held-out perplexity went down.
# Also refused with a clear error: LoRA on, and a non-text format. Needs KILN_BIN, KILN_SHARED_DIR,
# KILN_SOURCE_DIR, KILN_MPIRUN (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
ru=$KILN_SHARED_DIR/data/russian_corpus
# A byte count can cut a character in two: iconv -c drops the piece (and says so, exit 1).
utf8() { iconv -c -f utf-8 -t utf-8 2>/dev/null || true; }
head -c 200000 "$ru/besy_dostoevsky.txt" | utf8 > "$work/vocab.txt"
head -c 150000 "$ru/anna_karenina.txt" | utf8 > "$work/train.txt"
tail -c 20000 "$ru/anna_karenina.txt" | utf8 > "$work/heldout.txt"
model=$KILN_SOURCE_DIR/models/stories260K
"$KILN_BIN" tokenizer train --vocab-size 1000 --out "$work/ru" "$work/vocab.txt" > "$work/prep.log" 2>&1 &&
  "$KILN_BIN" tokenizer extend "$model" "$work/ru" --out "$work/ext" >> "$work/prep.log" 2>&1 &&
  "$KILN_BIN" lep init --model "$model" --tokenizer "$work/ext" --out "$work/adapted" >> "$work/prep.log" 2>&1 ||
  { cat "$work/prep.log"; fail "vocabulary and initialisation"; }
export KILN_LEP_MODEL=$work/adapted KILN_LEP_TRAIN=$work/train.txt KILN_LEP_EVAL=$work/heldout.txt
recipe=$KILN_SOURCE_DIR/recipes/lep/tiny_ru_embeddings.yaml
args=(train.max_steps=12 train.eval_every=0 train.threads=1 checkpoint.run_dir="$work/run")

rc=0; "$KILN_BIN" train "$recipe" "${args[@]}" lora.enabled=true > "$work/lora.log" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "lora.enabled" "$work/lora.log" || { cat "$work/lora.log"; fail "LoRA on: exit $rc"; }
rc=0; "$KILN_BIN" train "$recipe" "${args[@]}" data.format=jsonl > "$work/fmt.log" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "data.format" "$work/fmt.log" || { cat "$work/fmt.log"; fail "jsonl: exit $rc"; }
rm -rf "$work/run"

# Training on 2 ranks, then the untrained model's held-out perplexity for comparison.
$KILN_MPIRUN -np 2 "$KILN_BIN" train "$recipe" "${args[@]}" > "$work/train.log" 2>&1 ||
  { cat "$work/train.log"; fail "2-rank embedding training"; }
"$KILN_BIN" eval "$recipe" "${args[@]}" --base > "$work/before.json" 2> "$work/before.log" ||
  { cat "$work/before.log"; fail "eval of the initialised model"; }
grep -q "lep: training the embeddings and LM head" "$work/train.log" || fail "no freezing line"
"$KILN_BIN" export "$recipe" "${args[@]}" --merged --out "$work/merged" > "$work/export.log" 2>&1 ||
  { cat "$work/export.log"; fail "merged export"; }
python3 - "$work/adapted/model.safetensors" "$work/merged/model.safetensors" "$work/before.json" "$work/run/results.json" <<'PY' || fail "frozen tensors changed, or nothing was learned"
import json, struct, sys
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    head.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in head.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a.keys() == b.keys(), (sorted(a.keys() ^ b.keys()))
trained = {"model.embed_tokens.weight", "lm_head.weight"}
changed = sorted(k for k in a if a[k] != b[k])
assert set(changed) == trained, f"changed: {changed}"
before = json.load(open(sys.argv[3]))["metrics"]
after = json.load(open(sys.argv[4]))["eval"]
print(f"frozen: {len(a) - 2} tensors bit-identical; held-out perplexity {before['perplexity']:.2f} -> "
      f"{after['perplexity']:.2f}, bits per character {before['bits_per_char']:.3f} -> {after['bits_per_char']:.3f} "
      f"({after['chars_per_token']:.3f} characters per token)")
assert after["bits_per_char"] < before["bits_per_char"] and after["perplexity"] < before["perplexity"]
assert after["bits_per_byte"] < after["bits_per_char"]  # Cyrillic: 2 bytes a letter
assert abs(after["chars_per_token"] - before["chars_per_token"]) < 1e-12
PY
echo "OK"
