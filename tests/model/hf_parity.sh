#!/usr/bin/env bash
# kiln against Hugging Face transformers + peft and TensorBoard's reader (hf_parity.py says what is
# checked). Trains a short LS-LLaMA run on the bundled model with last-token pooling (as
# LlamaForSequenceClassification pools), evaluates it and exports it merged, then runs the Python
# checks with the project's .venv (skipped, exit 77, when the reference packages are missing).
# Needs KILN_BIN, KILN_SOURCE_DIR (set by ctest).
set -euo pipefail
py=$KILN_SOURCE_DIR/.venv/bin/python
[[ -x $py ]] || { echo "SKIP: $py missing (scripts/install-deps.sh makes it)"; exit 77; }
"$py" -c "import transformers, peft, tensorboard" 2>/dev/null \
  || { echo "SKIP: transformers, peft or tensorboard missing from .venv (scripts/python-env.sh installs them)"; exit 77; }
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
cd "$KILN_SOURCE_DIR"
recipe=recipes/tiny/sst2.yaml
ov=(checkpoint.run_dir="$w/run" task.pooling=last train.max_steps=60 train.log_every=10 train.eval_every=30)
export OMP_NUM_THREADS=1
"$KILN_BIN" train "$recipe" "${ov[@]}" >"$w/train.log" 2>&1 || { cat "$w/train.log"; exit 1; }
"$KILN_BIN" eval "$recipe" "${ov[@]}" --out "$w/eval" >"$w/eval.log" 2>&1 || { cat "$w/eval.log"; exit 1; }
"$KILN_BIN" export "$recipe" "${ov[@]}" --out "$w/merged" --merged >"$w/export.log" 2>&1 || { cat "$w/export.log"; exit 1; }
"$py" "$KILN_SOURCE_DIR/tests/model/hf_parity.py" --base models/stories260K --run "$w/run" --eval "$w/eval" \
  --merged "$w/merged" --dev datasets/sst2/dev.tsv --kiln "$KILN_BIN" --work "$w"
