#!/usr/bin/env bash
# An export that transformers and peft cannot reproduce is never silent: method regress (a
# mean-pooled hidden state into a `score` head with a bias, which LlamaForSequenceClassification
# cannot express) trains briefly; the end-of-training adapter export logs it in one line, once,
# `kiln export` says it in one line, and both READMEs state it. Needs KILN_BIN, KILN_SOURCE_DIR.
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
src=$KILN_SOURCE_DIR
export OMP_NUM_THREADS=1
cat >"$w/regress.yaml" <<YAML
name: refusal-regress
method: regress
model: {path: $src/models/stories260K}
lora: {r: 4, alpha: 8}
data: {format: tsv, train: $src/datasets/sst2/train.tsv, eval: $src/datasets/sst2/dev.tsv, max_len: 64,
       max_train_examples: 500, max_eval_examples: 50, store_dir: $w/store}
train: {micro_batch: 8, max_steps: 5, threads: 1, log_every: 5}
checkpoint: {run_dir: $w/run}
YAML
"$KILN_BIN" train "$w/regress.yaml" >"$w/train.log" 2>&1 || { cat "$w/train.log"; fail "training"; }
"$KILN_BIN" export "$w/regress.yaml" --out "$w/export" >"$w/export.log" 2>&1 || { cat "$w/export.log"; fail "export"; }
for log in train export; do
  n=$(grep -c "transformers and peft do not reproduce this adapter: the head reads the mean" "$w/$log.log" || true)
  [[ $n == 1 ]] || { cat "$w/$log.log"; fail "$log: $n lines saying the adapter is not reproducible, want 1"; }
done
for readme in "$w/run/adapter/README.md" "$w/export/README.md"; do
  grep -q "transformers and peft do not reproduce this export\*\*: the head reads the mean" "$readme" ||
    { cat "$readme"; fail "$readme does not say that transformers cannot reproduce it"; }
  grep -q "Method: \`regress\`; recipe \`refusal-regress\`" "$readme" || { cat "$readme"; fail "$readme: no provenance"; }
  ! grep -q '```python' "$readme" || fail "$readme shows Python lines for an export they do not reproduce"
done
grep "do not reproduce" "$w/export.log"
echo PASS
