#!/usr/bin/env bash
# Every ls_llama export against transformers + peft (hf_exports.py says what is checked): for each
# pooling (last, mean, max) x attention (causal, bidirectional) of sequence classification (tiny
# SST-2), token classification in both attentions (tiny CoNLL-2003), and the padding attended
# (task.pads: attended) of LS-unLLaMA, a short run trains, evaluates 200 dev examples (kiln's logits
# in predictions.tsv), writes its adapter and a merged export, and the Python lines of each export's
# README.md must give kiln's logits. The README's main job (recipes/tiny/sst2.yaml as it is: mean
# pooling, 2 ranks) is among them. Skipped (exit 77) where .venv lacks transformers or peft.
# Needs KILN_BIN, KILN_SOURCE_DIR, KILN_MPIRUN (set by ctest).
set -euo pipefail
py=$KILN_SOURCE_DIR/.venv/bin/python
[[ -x $py ]] || { echo "SKIP: $py missing (scripts/install-deps.sh makes it)"; exit 77; }
"$py" -c "import transformers, peft, sentencepiece" 2>/dev/null \
  || { echo "SKIP: transformers, peft or sentencepiece missing from .venv (scripts/python-env.sh installs them)"; exit 77; }
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
cd "$KILN_SOURCE_DIR"
export OMP_NUM_THREADS=1
short=(train.max_steps=30 train.log_every=10 train.threads=1 checkpoint.every=0 train.eval_batch=16
       data.max_train_examples=2000 data.max_eval_examples=200)
# name | recipe | ranks | overrides
settings=(
  "seq-last-causal|recipes/tiny/sst2.yaml|1|task.pooling=last"
  "seq-mean-causal|recipes/tiny/sst2.yaml|2|"
  "seq-max-causal|recipes/tiny/sst2.yaml|1|task.pooling=max"
  "seq-last-bidirectional|recipes/tiny/sst2.yaml|1|task.pooling=last model.attention=bidirectional"
  "seq-mean-bidirectional|recipes/tiny/sst2.yaml|1|task.pooling=mean model.attention=bidirectional"
  "seq-max-bidirectional|recipes/tiny/sst2.yaml|1|task.pooling=max model.attention=bidirectional"
  "seq-max-bidirectional-pads|recipes/tiny/sst2.yaml|1|task.pooling=max model.attention=bidirectional task.pads=attended"
  "seq-mean-bidirectional-pads|recipes/tiny/sst2.yaml|1|task.pooling=mean model.attention=bidirectional task.pads=attended"
  "tok-causal|recipes/tiny/conll2003.yaml|1|model.attention=causal"
  "tok-bidirectional|recipes/tiny/conll2003.yaml|1|model.attention=bidirectional"
  "tok-bidirectional-pads|recipes/tiny/conll2003.yaml|1|model.attention=bidirectional task.pads=attended"
)
args=()
for s in "${settings[@]}"; do
  IFS='|' read -r name recipe ranks extra <<<"$s"
  read -r -a ov <<<"$extra"
  store=$w/store-$(basename "$recipe" .yaml)
  ov=("${short[@]}" "${ov[@]}" checkpoint.run_dir="$w/$name" data.store_dir="$store")
  launch=()
  [[ $ranks == 1 ]] || read -r -a launch <<<"$KILN_MPIRUN -np $ranks"
  "${launch[@]}" "$KILN_BIN" train "$recipe" "${ov[@]}" >"$w/$name.log" 2>&1 || { cat "$w/$name.log"; exit 1; }
  "$KILN_BIN" export "$recipe" "${ov[@]}" --merged --out "$w/$name-merged" >"$w/$name-export.log" 2>&1 \
    || { cat "$w/$name-export.log"; exit 1; }
  # Every ls_llama setting is reproducible: no export says otherwise.
  if grep -q "do not reproduce" "$w/$name.log" "$w/$name-export.log"; then
    grep "do not reproduce" "$w/$name.log" "$w/$name-export.log"; echo "FAIL: $name: an export is called unreproducible"; exit 1
  fi
  echo "trained and exported $name ($ranks rank(s))"
  args+=(--setting "$name=$w/$name")
done
"$py" "$KILN_SOURCE_DIR/tests/model/hf_exports.py" --sst2 datasets/sst2/dev.tsv --conll datasets/conll2003/eng.testa \
  --eval-batch 16 "${args[@]}" </dev/null  # stdin closed: transformers' trust_remote_code prompt fails at once
