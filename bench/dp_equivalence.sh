#!/usr/bin/env bash
# "N ranks give the losses of one rank", at the settings users run: the tiny SST-2 recipe (real data,
# the bundled model) for 40 steps on 1, 2 and 3 ranks, LoRA and full fine-tuning, with and without
# activation checkpointing and ZeRO-1, float32. The global batch (48 = micro-batch 8 x ranks x
# accumulation) is the same in every run, so every loss must equal the 1-rank run's.
# Prints a Markdown table of the losses at steps 10, 20, 40 and the worst relative difference from
# the 1-rank run of the same setting over all 40 steps (figures only; nothing is asserted).
#   bash bench/dp_equivalence.sh [build/kiln] [steps]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kiln=${1:-$root/build/kiln}
steps=${2:-40}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mpirun=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) == 0 ]] && mpirun+=(--allow-run-as-root)
common=(train.max_steps="$steps" train.global_batch=48 train.micro_batch=8 train.log_every=1 train.threads=1
        data.max_eval_examples=64 checkpoint.every=0 data.store_dir="$work/store")

run() {  # name ranks overrides...
  local name=$1 np=$2; shift 2
  local cmd=("$kiln" train "$root/recipes/tiny/sst2.yaml" "${common[@]}" checkpoint.run_dir="$work/$name" "$@")
  if [[ $np == 1 ]]; then "${cmd[@]}" > "$work/$name.log" 2>&1; else "${mpirun[@]}" -np "$np" "${cmd[@]}" > "$work/$name.log" 2>&1; fi ||
    { tail -5 "$work/$name.log" >&2; echo "bench/dp_equivalence.sh: run $name failed" >&2; exit 1; }
}
# Preprocess once, so that the store is not written by several runs at a time.
run warmup 1 train.max_steps=1

echo "| setting | ranks | checkpointing | ZeRO-1 | loss step 10 | step 20 | step $steps | worst relative difference from 1 rank |"
echo "|---|---|---|---|---|---|---|---|"
for mode in lora full; do
  extra=(); [[ $mode == full ]] && extra=(lora.enabled=false train.lr=1e-3)
  run "$mode-np1" 1 "${extra[@]}"
  for np in 1 2 3; do
    for ckpt in false true; do
      for zero in false true; do
        [[ $np == 1 && $zero == true ]] && continue
        name="$mode-np$np-ckpt$ckpt-zero$zero"
        run "$name" "$np" "${extra[@]}" model.activation_checkpointing=$ckpt dist.zero1=$zero
        python3 - "$work/$mode-np1/metrics.jsonl" "$work/$name/metrics.jsonl" "$mode" "$np" "$ckpt" "$zero" "$steps" <<'PY'
import json, sys
def losses(path):
    out = {}
    for line in open(path):
        j = json.loads(line)
        if j.get("split") == "train" and "loss" in j: out[j["step"]] = j["loss"]
    return out
ref, got = losses(sys.argv[1]), losses(sys.argv[2])
mode, np_, ckpt, zero, steps = sys.argv[3:8]
worst = max(abs(got[s] - ref[s]) / abs(ref[s]) for s in ref)
print(f"| {mode} | {np_} | {ckpt} | {zero} | {got[10]:.7f} | {got[20]:.7f} | {got[int(steps)]:.7f} | {worst:.2e} |")
PY
      done
    done
  done
done
