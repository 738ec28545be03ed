#!/usr/bin/env bash
# Throughput on the real model (models/smollm2-135m-instruct, scripts/fetch-smollm2.sh) on this CPU:
# a LoRA training step of `kiln train` (method lm, r 8 on the seven projections, SST-2 sentences
# packed into 128-token rows, global batch 8) in float32 and in bf16 (model.dtype bfloat16 +
# train.precision bf16), on 1 and 2 ranks; then the forward pass alone (bench_model --forward).
# One run each; figures go to docs/model.md. Usage: bash bench/smollm2_cpu.sh [build dir]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
model=$root/models/smollm2-135m-instruct
[[ -f $model/model.safetensors ]] || { echo "$model missing: bash scripts/fetch-smollm2.sh" >&2; exit 1; }
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
grep -o 'avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' '; echo "($(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2))"
sed -n 2,20001p "$root/datasets/sst2/train.tsv" | cut -f1 >"$w/train.txt"
for prec in fp32 bf16; do
  dtype=float32; [[ $prec == bf16 ]] && dtype=bfloat16
  for np in 1 2; do
    cat >"$w/r.yaml" <<YAML
name: smol-bench
method: lm
model: {path: $model, dtype: $dtype}
lora: {r: 8, alpha: 16, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}
data: {format: text, train: $w/train.txt, max_len: 128, store_dir: $w/store}
train: {micro_batch: $((8 / np)), global_batch: 8, max_steps: 12, lr: 1e-4, precision: $prec, log_every: 12, eval_every: 0}
checkpoint: {run_dir: $w/run-$prec-$np, every: 0}
YAML
    rm -rf "$w/run-$prec-$np"
    OMP_NUM_THREADS=$((2 / np)) mpirun --oversubscribe --bind-to none --allow-run-as-root -np $np \
      "$build/kiln" train "$w/r.yaml" >"$w/log" 2>&1 || { cat "$w/log"; exit 1; }
    echo "train $prec ranks $np: $(grep -o 'step 12/12 .*tok/s' "$w/log" | tail -1)"
  done
done
for dtype in float32 bfloat16; do
  "$build/bench/bench_model" --model "$model" --threads 2 --batch 8 --seq 128 --steps 5 --dtype "$dtype" --forward
done
