#!/usr/bin/env bash
# Pre-emption through the launcher: SIGTERM to launch/local.sh (what a scheduler or a user's kill
# sends) must end the run with a checkpoint and exit 3, as SIGUSR1 does, even with steps longer
# than the ~2 s after which Open MPI's mpirun kills ranks on a SIGTERM of its own. Steps here are
# about 3 s (tiny SST-2, 1,024 sentences per rank and step, 2 ranks).
# Needs KILN_BIN, KILN_SOURCE_DIR (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
bash "$KILN_SOURCE_DIR/launch/local.sh" -np 2 "$KILN_BIN" train "$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml" \
  train.micro_batch=1024 train.global_batch=2048 train.max_steps=200 train.log_every=1 \
  checkpoint.export_adapter=false checkpoint.run_dir="$work/run" data.store_dir="$work/store" > "$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 240); do grep -q "step 2/" "$work/log" && break; kill -0 $pid 2>/dev/null || break; sleep 0.5; done
grep -q "step 2/" "$work/log" || { cat "$work/log"; fail "training did not reach step 2"; }
kill -TERM $pid
rc=0
wait $pid || rc=$?
[[ $rc == 3 ]] || { tail -20 "$work/log"; fail "SIGTERM to launch/local.sh: exit $rc, expected 3"; }
grep -q "stop signal received" "$work/log" || fail "the ranks never saw the stop"
ls "$work"/run/checkpoints/step-*.h5 > /dev/null 2>&1 || fail "no checkpoint written"
echo "OK: exit 3 with $(ls "$work"/run/checkpoints)"
