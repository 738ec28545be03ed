#!/usr/bin/env bash
# `kiln report` on real runs (tiny SST-2, a few steps each, 1 rank) of a table written here:
#   - two seeds of one cell give the mean and the sample standard deviation of their accuracies;
#   - a cell without a run is marked missing, with the command that would make it;
#   - after the recipe is edited, its earlier runs are flagged (their recipe fingerprint differs)
#     and no longer count as the recipe's, while a run of the edited recipe does;
#   - curves are well-formed SVG with a line per run; a report.md kiln did not write is not
#     overwritten.
# Needs KILN_BIN, KILN_SOURCE_DIR (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap '[[ -n ${KEEP:-} ]] || rm -rf "$work"' EXIT
mkdir -p "$work/recipes"
cat > "$work/recipes/sst2.yaml" <<YAML
extends: $KILN_SOURCE_DIR/recipes/tiny/sst2.yaml
name: report-sst2
data: {max_train_examples: 640, max_eval_examples: 200, store_dir: $work/store}
train: {max_steps: 12, micro_batch: 16, log_every: 2, eval_every: 6, threads: 1}
checkpoint: {export_adapter: false}
YAML
cat > "$work/recipes/sst2_unllama.yaml" <<YAML
extends: sst2.yaml
name: report-sst2-unllama
model: {attention: bidirectional}
YAML
cat > "$work/recipes/table.yaml" <<YAML
title: "Report test: SST-2"
scale: 100
metric: accuracy
rows: [SST-2]
columns: [causal, bidirectional]
cells:
  - {row: SST-2, column: causal, recipe: sst2.yaml, paper: 96.67, source: "a paper, Table 1"}
  - {row: SST-2, column: bidirectional, recipe: sst2_unllama.yaml}
YAML
acc() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['eval']['accuracy'])" "$1"; }
for seed in 1 2; do
  "$KILN_BIN" train "$work/recipes/sst2.yaml" train.seed=$seed checkpoint.run_dir="$work/runs/seed$seed" \
    > "$work/train$seed.log" 2>&1 || { cat "$work/train$seed.log"; fail "training seed $seed"; }
done
a1=$(acc "$work/runs/seed1/results.json"); a2=$(acc "$work/runs/seed2/results.json")
cd "$work"
"$KILN_BIN" report recipes runs/seed1 runs/seed2 --out out > report.log 2>&1 || { cat report.log; fail "kiln report"; }
want=$(python3 -c "
import statistics as s; v=[100*$a1, 100*$a2]
print(f'{s.mean(v):.2f} ± {s.stdev(v):.2f} (n=2) · paper 96.67 · {s.mean(v)-96.67:+.2f}')")
grep -qF "| SST-2 | $want | missing |" out/report.md || { cat out/report.md; fail "expected the cell '$want' and a missing one"; }
grep -q "kiln train recipes/sst2_unllama.yaml" out/report.md || fail "the missing cell does not say how to fill it"
grep -q "recipe changed" out/report.md && fail "runs of the unchanged recipe were flagged"
grep -q "^| SST-2 / causal | runs/seed1 | report-sst2 | [0-9a-f]\{12\}" out/report.md || fail "run row without its commit"
for f in out/curves/*.svg; do python3 -c "import sys, xml.dom.minidom as m; m.parse(sys.argv[1])" "$f" || fail "$f is not XML"; done
[[ $(grep -c "<polyline" out/curves/report-test--sst-2-loss-steps.svg) == 2 ]] || fail "loss curve: not one line per run"

# Edit the recipe: the two runs are now of an older version.
sed -i 's/max_steps: 12/max_steps: 14/' recipes/sst2.yaml
"$KILN_BIN" report recipes runs/seed1 runs/seed2 --out out > report2.log 2>&1 || { cat report2.log; fail "kiln report (edited)"; }
[[ $(grep -c "recipe changed since this run" out/report.md) == 2 ]] || { cat out/report.md; fail "edited recipe: runs not flagged"; }
grep -q "(edited recipe)" out/report.md || fail "the cell does not say its value comes from an edited recipe"
"$KILN_BIN" train recipes/sst2.yaml checkpoint.run_dir="$work/runs/new" > train3.log 2>&1 || { cat train3.log; fail "training the edited recipe"; }
a3=$(acc runs/new/results.json)
"$KILN_BIN" report recipes runs/seed1 runs/seed2 runs/new --out out > report3.log 2>&1 || { cat report3.log; fail "kiln report (new run)"; }
v3=$(python3 -c "print(f'{100*$a3:.2f}')")
grep -qF "| SST-2 | $v3 · paper 96.67" out/report.md || { cat out/report.md; fail "the run of the edited recipe is not the cell's value"; }

mkdir -p other && echo "my notes" > other/report.md
"$KILN_BIN" report recipes --out other > /dev/null 2> refuse.log && fail "overwrote a report.md kiln did not write"
grep -q "not written by kiln report" refuse.log || fail "refusal message: $(cat refuse.log)"
[[ $(cat other/report.md) == "my notes" ]] || fail "other/report.md changed"
echo "OK"
