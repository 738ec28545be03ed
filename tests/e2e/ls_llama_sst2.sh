#!/usr/bin/env bash
# LS-LLaMA end to end on the tiny SST-2 recipe (real data, the bundled model), kept short:
#   - 2 ranks train, evaluate and export; `kiln eval` on the checkpoint and on the exported PEFT
#     adapter reproduce the final metrics; the merged export evaluates the same too;
#   - 1 rank with the same global batch (and no dropout) reaches the same accuracy and losses.
# Needs KILN_BIN, KILN_SOURCE_DIR, KILN_MPIRUN (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
recipe=$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml
short=(data.max_train_examples=3000 data.max_eval_examples=300 train.max_steps=60 train.global_batch=32
       train.micro_batch=16 checkpoint.every=0 train.threads=1 data.store_dir="$work/store"
       task.head_dropout=0)  # dropout masks come from per-rank streams: 1 and 2 ranks would differ
metric() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d$2)" "$1"; }

$KILN_MPIRUN -np 2 "$KILN_BIN" train "$recipe" "${short[@]}" checkpoint.run_dir="$work/np2" > "$work/np2.log" 2>&1 ||
  { cat "$work/np2.log"; fail "2-rank training"; }
[[ -s $work/np2/results.md && -s $work/np2/adapter/adapter_model.safetensors ]] || fail "no results.md or adapter"
grep -q "| accuracy |" "$work/np2/results.md" || fail "results.md has no accuracy row"
acc=$(metric "$work/np2/results.json" "['eval']['accuracy']")
echo "2 ranks: accuracy $acc"

# kiln eval from the run directory's checkpoint, on 2 ranks.
$KILN_MPIRUN -np 2 "$KILN_BIN" eval "$recipe" "${short[@]}" checkpoint.run_dir="$work/np2" > "$work/eval_ckpt.json" 2> "$work/eval_ckpt.log" ||
  { cat "$work/eval_ckpt.log"; fail "eval of the checkpoint"; }
a=$(metric "$work/eval_ckpt.json" "['metrics']['accuracy']")
[[ $a == "$acc" ]] || fail "eval of the checkpoint: accuracy $a, training ended with $acc"
echo "eval (checkpoint): accuracy $a"

# kiln eval of the exported adapter alone (a fresh run dir: no checkpoint to fall back on), 1 rank.
"$KILN_BIN" eval "$recipe" "${short[@]}" checkpoint.run_dir="$work/fresh" --base task.adapter="$work/np2/adapter" \
  > "$work/eval_adapter.json" 2> "$work/eval_adapter.log" || { cat "$work/eval_adapter.log"; fail "eval of the adapter"; }
a=$(metric "$work/eval_adapter.json" "['metrics']['accuracy']")
[[ $a == "$acc" ]] || fail "eval of the adapter: accuracy $a, training ended with $acc"
echo "eval (adapter): accuracy $a"

# kiln export refuses to overwrite, and writes a merged model that still loads.
"$KILN_BIN" export "$recipe" "${short[@]}" checkpoint.run_dir="$work/np2" --out "$work/np2/adapter" 2> "$work/exp.err" &&
  fail "export overwrote an existing folder"
grep -q "never overwrites" "$work/exp.err" || { cat "$work/exp.err"; fail "export error message"; }
"$KILN_BIN" export "$recipe" "${short[@]}" checkpoint.run_dir="$work/np2" --merged --out "$work/merged" 2> "$work/exp.log" ||
  { cat "$work/exp.log"; fail "merged export"; }
[[ -s $work/merged/config.json && -s $work/merged/model.safetensors ]] || fail "merged export is missing files"
# Mean pooling is not transformers' own: the folder names kiln's class and carries its code.
grep -q '"KilnLlamaForSequenceClassification"' "$work/merged/config.json" || fail "merged config.json: not kiln's class"
[[ -s $work/merged/modeling_kiln_llama.py && -s $work/merged/README.md && -s $work/np2/adapter/README.md ]] ||
  fail "an export lacks modeling_kiln_llama.py or README.md"
# The merged folder as the model (its head included), without LoRA: the same predictions.
"$KILN_BIN" eval "$recipe" "${short[@]}" checkpoint.run_dir="$work/fresh" --base model.path="$work/merged" lora.enabled=false \
  > "$work/eval_merged.json" 2> "$work/eval_merged.log" || { cat "$work/eval_merged.log"; fail "eval of the merged model"; }
a=$(metric "$work/eval_merged.json" "['metrics']['accuracy']")
[[ $a == "$acc" ]] || fail "eval of the merged model: accuracy $a, training ended with $acc"
echo "eval (merged): accuracy $a"

# The same run on 1 rank (2 micro-batches of 16 per step instead of 2 ranks x 16).
"$KILN_BIN" train "$recipe" "${short[@]}" checkpoint.run_dir="$work/np1" > "$work/np1.log" 2>&1 ||
  { cat "$work/np1.log"; fail "1-rank training"; }
a=$(metric "$work/np1/results.json" "['eval']['accuracy']")
[[ $a == "$acc" ]] || fail "1 rank: accuracy $a, 2 ranks: $acc"
python3 - "$work/np1/results.json" "$work/np2/results.json" <<'PY' || fail "1 and 2 ranks end with different eval losses"
import json, sys
a, b = (json.load(open(f))["eval"]["loss"] for f in sys.argv[1:])
print(f"eval loss: 1 rank {a:.8f}, 2 ranks {b:.8f}")
sys.exit(0 if abs(a - b) <= 1e-4 * abs(b) else 1)
PY
echo "1 rank: accuracy $a"
echo "PASS"
