#!/usr/bin/env bash
# GGUF out and back on the bundled model: a short LoRA run of method lm, exported with
# `kiln export --gguf` (f32 and q8_0) and `--merged`; transformers' GGUF loader and
# `kiln import gguf` must give the merged model's logits (gguf_parity.py). Skipped (exit 77) where
# .venv lacks transformers or gguf. Needs KILN_BIN, KILN_SOURCE_DIR (set by ctest).
set -euo pipefail
py=$KILN_SOURCE_DIR/.venv/bin/python
[[ -x $py ]] || { echo "SKIP: $py missing (scripts/install-deps.sh makes it)"; exit 77; }
"$py" -c "import transformers, gguf" 2>/dev/null \
  || { echo "SKIP: transformers or gguf missing from .venv (scripts/python-env.sh installs them)"; exit 77; }
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
src=$KILN_SOURCE_DIR
export OMP_NUM_THREADS=1
sed -n 2,3001p "$src/datasets/sst2/train.tsv" | cut -f1 >"$w/train.txt"
cat >"$w/lm.yaml" <<YAML
name: gguf-roundtrip
method: lm
model: {path: $src/models/stories260K}
lora: {r: 4, alpha: 8, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}
data: {format: text, train: $w/train.txt, max_len: 64, store_dir: $w/store}
train: {micro_batch: 8, max_steps: 30, lr: 3e-3, log_every: 10, eval_every: 0}
checkpoint: {run_dir: $w/run}
YAML
run() { "$@" >"$w/log" 2>&1 || { cat "$w/log"; echo "FAILED: $*"; exit 1; }; }
run "$KILN_BIN" train "$w/lm.yaml"
run "$KILN_BIN" export "$w/lm.yaml" --merged --out "$w/merged"
run "$KILN_BIN" export "$w/lm.yaml" --gguf f32 --out "$w/g32"
run "$KILN_BIN" export "$w/lm.yaml" --gguf q8_0 --out "$w/g8"
ls -la "$w/g32" "$w/g8"
# An existing export is never overwritten.
if "$KILN_BIN" export "$w/lm.yaml" --gguf f32 --out "$w/g32" >"$w/log" 2>&1; then echo "FAILED: overwrote $w/g32"; exit 1; fi
grep -q 'exists and is not an empty folder' "$w/log" || { cat "$w/log"; exit 1; }
if "$KILN_BIN" export "$w/lm.yaml" --gguf q4_k --out "$w/gq" >"$w/log" 2>&1; then echo "FAILED: wrote q4_k"; exit 1; fi
grep -q -- '--gguf q4_k: kiln writes f32, f16, bf16 or q8_0' "$w/log" || { cat "$w/log"; exit 1; }
run "$KILN_BIN" import gguf "$w/g32/model-f32.gguf" --out "$w/imported32"
run "$KILN_BIN" import gguf "$w/g8/model-q8_0.gguf" --out "$w/imported8"
sed -n 2,7p "$src/datasets/sst2/dev.tsv" | cut -f1 >"$w/texts.txt"
echo "Once upon a time, there was a little girl named Lily." >>"$w/texts.txt"
# f32: the merged folder, the re-imported folder and transformers on the GGUF agree.
"$py" "$src/tests/model/gguf_parity.py" --kiln "$KILN_BIN" --gguf "$w/g32/model-f32.gguf" \
  --folder "$w/merged" --folder "$w/imported32" --texts "$w/texts.txt" --tol 1e-4 --work "$w"
# q8_0: kiln and transformers read the same quantized bytes.
"$py" "$src/tests/model/gguf_parity.py" --kiln "$KILN_BIN" --gguf "$w/g8/model-q8_0.gguf" \
  --folder "$w/imported8" --texts "$w/texts.txt" --tol 1e-4 --work "$w"
echo "PASS"
