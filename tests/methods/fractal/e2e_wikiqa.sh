#!/usr/bin/env bash
# FRACTAL end to end on the tiny WikiQA recipe (real data, the bundled model as encoder), kept short:
#   - 2 ranks embed, train the four phases (bag, priors, fractal, supervised) and write results.md
#     with a row per phase;
#   - 1 rank gives the same sentence AUC-ROC in every phase, within 1e-4: the embeddings are computed
#     in the same batches on any number of ranks and the global batch is the same, but a gradient
#     summed over 2 ranks rounds differently from one summed in one process (measured: equal to 16
#     digits after 20 epochs, 4e-6 apart after 3).
#   - a rerun of the finished run trains nothing and reports the same figures; `kiln eval` of the
#     run (1 rank) evaluates each phase's last checkpoint and gets the same figures (within 1e-4:
#     its eval batches are cut differently from those of 2 ranks);
#   - with lora.enabled the encoder trains end to end (a few steps) and exports its adapter.
# Needs KILN_BIN, KILN_SOURCE_DIR, KILN_MPIRUN (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
recipe=$KILN_SOURCE_DIR/recipes/fractal/tiny_wikiqa.yaml
short=(train.epochs=3 train.threads=1 data.store_dir="$work/store")
aucs() { python3 -c "import json,sys; d=json.load(open(sys.argv[1]))['phases']; print(' '.join(f\"{p}={d[p]['eval']['sentence_auc']!r}\" for p in ['bag','priors','fractal','supervised']))" "$1"; }

$KILN_MPIRUN -np 2 "$KILN_BIN" train "$recipe" "${short[@]}" checkpoint.run_dir="$work/np2" > "$work/np2.log" 2>&1 ||
  { cat "$work/np2.log"; fail "2-rank training"; }
for p in bag priors fractal supervised; do
  grep -q "^| $p | " "$work/np2/results.md" || fail "results.md has no row for phase $p"
  [[ -s $work/np2/$p/checkpoints/step-00000084.h5 ]] || fail "phase $p wrote no final checkpoint"
done
grep -q "pseudo-labels for 8672 training sentences" "$work/np2.log" || fail "the fractal phase made no pseudo-labels"
two=$(aucs "$work/np2/results.json"); echo "2 ranks: $two"

"$KILN_BIN" train "$recipe" "${short[@]}" checkpoint.run_dir="$work/np1" > "$work/np1.log" 2>&1 ||
  { cat "$work/np1.log"; fail "1-rank training"; }
one=$(aucs "$work/np1/results.json"); echo "1 rank:  $one"
python3 - "$work/np1/results.json" "$work/np2/results.json" <<'PY' || fail "1 rank and 2 ranks differ"
import json, sys
a, b = (json.load(open(p))['phases'] for p in sys.argv[1:])
bad = [p for p in a if abs(a[p]['eval']['sentence_auc'] - b[p]['eval']['sentence_auc']) > 1e-4]
sys.exit(1 if bad else 0)
PY

$KILN_MPIRUN -np 2 "$KILN_BIN" train "$recipe" "${short[@]}" checkpoint.run_dir="$work/np2" > "$work/rerun.log" 2>&1 ||
  { cat "$work/rerun.log"; fail "rerun"; }
[[ $(grep -c "already complete" "$work/rerun.log") == 4 ]] || fail "the rerun trained again"
again=$(aucs "$work/np2/results.json"); [[ $again == "$two" ]] || fail "the rerun reports $again"
"$KILN_BIN" eval "$recipe" "${short[@]}" checkpoint.run_dir="$work/np2" > "$work/eval.json" 2> "$work/eval.log" ||
  { cat "$work/eval.log"; fail "kiln eval"; }
python3 - "$work/eval.json" "$work/np2/results.json" <<'PY' || fail "kiln eval differs from the training run"
import json, sys
e, t = json.load(open(sys.argv[1]))['phases'], json.load(open(sys.argv[2]))['phases']
sys.exit(1 if any(abs(e[p]['metrics']['sentence_auc'] - t[p]['eval']['sentence_auc']) > 1e-4 for p in t) else 0)
PY
$KILN_MPIRUN -np 2 "$KILN_BIN" train "$recipe" "${short[@]}" lora.enabled=true "lora.target_modules=[q_proj,v_proj]" \
  "task.phases=[supervised]" train.max_steps=6 checkpoint.export_adapter=true checkpoint.run_dir="$work/lora" \
  > "$work/lora.log" 2>&1 || { cat "$work/lora.log"; fail "training with a LoRA-tuned encoder"; }
[[ -s $work/lora/adapter/adapter_model.safetensors ]] || fail "no adapter from the tuned encoder"
grep -q "FEATURE_EXTRACTION" "$work/lora/adapter/adapter_config.json" || fail "adapter task type"
grep -q "^| supervised | 6 " "$work/lora/results.md" || fail "the tuned run's results.md"
echo "OK"
