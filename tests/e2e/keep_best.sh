#!/usr/bin/env bash
# checkpoint.keep_best on the tiny SST-2 recipe, 2 ranks: the run evaluates every 5 steps and ends
# on its best evaluation, by eval loss. Over these 20 steps the eval loss is lowest at step 5
# (0.6956, then 0.6960, 0.7001, 0.7014), so the best is not the last step and the test can see:
#   - best.json names the step and value; that checkpoint survives checkpoint.keep=1;
#   - results.json's final figures are the best step's (re-evaluated), and say which step;
#   - the exported adapter is the best step's weights (`kiln eval` of it gives the same loss);
#   - `kiln eval` on the run directory takes the best checkpoint;
#   - a rerun of the finished command evaluates the best checkpoint too;
#   - a metric the evaluation does not give is a one-line error naming the key.
# Needs KILN_BIN, KILN_SOURCE_DIR, KILN_MPIRUN (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
recipe=$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml
run=(data.max_train_examples=2000 data.max_eval_examples=200 train.max_steps=20 train.global_batch=32
     train.micro_batch=16 train.eval_every=5 checkpoint.every=0 checkpoint.keep=1 train.threads=1
     data.store_dir="$work/store" checkpoint.keep_best=loss checkpoint.run_dir="$work/run")
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d$2)" "$1"; }

$KILN_MPIRUN -np 2 "$KILN_BIN" train "$recipe" "${run[@]}" > "$work/train.log" 2>&1 ||
  { cat "$work/train.log"; fail "training"; }
[[ -s $work/run/best.json ]] || fail "no best.json"
best_step=$(json "$work/run/best.json" "['step']")
best_value=$(json "$work/run/best.json" "['value']")
best_ckpt=$(json "$work/run/best.json" "['checkpoint']")
echo "best: step $best_step, loss $best_value, $best_ckpt"
[[ $best_step != 20 ]] || fail "the lowest loss was the last step's: the test cannot tell best from last"
[[ -f $best_ckpt ]] || fail "the best checkpoint was pruned"
[[ -f $work/run/checkpoints/step-00000020.h5 ]] || fail "no last checkpoint"
[[ $(json "$work/run/results.json" "['best']['step']") == "$best_step" ]] || fail "results.json does not name the best step"
final=$(json "$work/run/results.json" "['eval']['loss']")
python3 -c "import sys; a,b=map(float,sys.argv[1:]); sys.exit(abs(a-b)>1e-6*max(1,abs(b)))" "$final" "$best_value" ||
  fail "results.json loss $final is not the best evaluation's $best_value"
grep -q "the best \`loss\`" "$work/run/results.md" || fail "results.md does not say the figures are the best step's"

# The adapter written at the end is the best step's.
"$KILN_BIN" eval "$recipe" "${run[@]}" checkpoint.run_dir="$work/fresh" --base task.adapter="$work/run/adapter" \
  > "$work/eval_adapter.json" 2> "$work/eval_adapter.log" || { cat "$work/eval_adapter.log"; fail "eval of the adapter"; }
a=$(json "$work/eval_adapter.json" "['metrics']['loss']")
python3 -c "import sys; a,b=map(float,sys.argv[1:]); sys.exit(abs(a-b)>1e-5*max(1,abs(b)))" "$a" "$best_value" ||
  fail "the adapter gives loss $a, the best step $best_value"

# kiln eval on the run directory takes the best checkpoint.
$KILN_MPIRUN -np 2 "$KILN_BIN" eval "$recipe" "${run[@]}" > "$work/eval_run.json" 2> "$work/eval_run.log" ||
  { cat "$work/eval_run.log"; fail "eval of the run"; }
a=$(json "$work/eval_run.json" "['metrics']['loss']")
python3 -c "import sys; a,b=map(float,sys.argv[1:]); sys.exit(abs(a-b)>1e-6*max(1,abs(b)))" "$a" "$best_value" ||
  fail "kiln eval of the run gives loss $a, the best step $best_value"

# Rerunning the finished command evaluates the best checkpoint and rewrites nothing.
cp "$work/run/results.json" "$work/results.before"
$KILN_MPIRUN -np 2 "$KILN_BIN" train "$recipe" "${run[@]}" > "$work/rerun.log" 2>&1 || { cat "$work/rerun.log"; fail "rerun"; }
grep -q "the run ended on step $best_step" "$work/rerun.log" || { cat "$work/rerun.log"; fail "the rerun did not take the best checkpoint"; }
cmp -s "$work/run/results.json" "$work/results.before" || fail "the rerun rewrote results.json"

# A metric the evaluation does not give.
"$KILN_BIN" train "$recipe" "${run[@]}" checkpoint.run_dir="$work/bad" checkpoint.keep_best=f1 > "$work/bad.log" 2>&1 &&
  fail "an unknown keep_best metric trained to the end"
grep -q "key \`checkpoint.keep_best\`: the evaluation gives no metric \`f1\` (it gives: accuracy" "$work/bad.log" ||
  { cat "$work/bad.log"; fail "no clear error for an unknown metric"; }
echo "PASS"
