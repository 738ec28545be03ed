#!/usr/bin/env bash
# The real kiln binary on the tiny SST-2 recipe (real data, the bundled model) at users' settings:
# with activation checkpointing, 2 ranks (LoRA) and 3 ranks (full fine-tuning with ZeRO-1, shards
# that do not divide evenly) give the losses of 1 rank, float32, within 1e-6 relative at every step.
# Before the fix, 2 ranks with checkpointing drifted from step 1 (0.7141 against 0.7147 at step 10).
# Needs KILN_BIN, KILN_SOURCE_DIR, KILN_MPIRUN (set by ctest). bench/dp_equivalence.sh is the full table.
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
recipe=$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml
common=(train.max_steps=12 train.global_batch=48 train.micro_batch=8 train.log_every=1 train.threads=1
        data.max_train_examples=2000 data.max_eval_examples=32 checkpoint.every=0 data.store_dir="$work/store")
run() {  # name ranks overrides...
  local name=$1 np=$2; shift 2
  local cmd=("$KILN_BIN" train "$recipe" "${common[@]}" checkpoint.run_dir="$work/$name" "$@")
  if [[ $np == 1 ]]; then "${cmd[@]}" > "$work/$name.log" 2>&1; else $KILN_MPIRUN -np "$np" "${cmd[@]}" > "$work/$name.log" 2>&1; fi ||
    { cat "$work/$name.log"; fail "run $name"; }
}
compare() {  # reference run, run
  python3 - "$work/$1/metrics.jsonl" "$work/$2/metrics.jsonl" "$2" <<'PY'
import json, sys
def losses(path):
    return {j["step"]: j["loss"] for j in map(json.loads, open(path)) if j.get("split") == "train"}
ref, got = losses(sys.argv[1]), losses(sys.argv[2])
assert len(ref) == 12 and set(got) == set(ref), (len(ref), sorted(got))
worst = max(abs(got[s] - ref[s]) / abs(ref[s]) for s in ref)
print(f"{sys.argv[3]}: step 12 loss {got[12]:.7f} (1 rank {ref[12]:.7f}), worst relative difference {worst:.2e}")
sys.exit(0 if worst <= 1e-6 else 1)
PY
}
run lora-np1 1
# Under the checking communicator: a buffer written while its collective is in flight, or ranks
# issuing different collectives, ends the run with the finding.
KILN_CHECK_COLLECTIVES=1 run lora-np2-ckpt 2 model.activation_checkpointing=true
grep -q "communicator: mpi+checked" "$work/lora-np2-ckpt.log" || fail "the checking communicator was not used"
compare lora-np1 lora-np2-ckpt || fail "LoRA: 2 ranks with checkpointing differ from 1 rank"
full=(lora.enabled=false train.lr=1e-3)
run full-np1 1 "${full[@]}"
run full-np3-ckpt-zero1 3 "${full[@]}" model.activation_checkpointing=true dist.zero1=true
compare full-np1 full-np3-ckpt-zero1 || fail "full fine-tuning: 3 ranks with checkpointing and ZeRO-1 differ from 1 rank"
echo "OK"
