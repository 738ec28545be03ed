#!/usr/bin/env bash
# Pre-emption through the launcher: SIGTERM to launch/local.sh (what a scheduler or a user's kill
# sends) must end the run with a checkpoint and exit 3, as SIGUSR1 does, even with steps longer
# than the ~2 s after which Open MPI's mpirun kills ranks on a SIGTERM of its own. Steps here are
# about 3 s (tiny SST-2, 1,024 sentences per rank and step, 2 ranks).
# Needs KILN_BIN, KILN_SOURCE_DIR (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d)
# A failed check leaves no training behind (the launchers turn SIGTERM into a checkpoint and exit).
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
bash "$KILN_SOURCE_DIR/launch/local.sh" -np 2 "$KILN_BIN" train "$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml" \
  train.micro_batch=1024 train.global_batch=2048 train.max_steps=200 train.log_every=1 \
  checkpoint.export_adapter=false checkpoint.run_dir="$work/run" data.store_dir="$work/store" > "$work/log" 2>&1 &
pid=$!
# Up to 10 min: the loop ends at step 2; tokenizing SST-2 alone takes 80 s in the sanitizers' build.
for _ in $(seq 1 1200); do grep -q "step 2/" "$work/log" && break; kill -0 $pid 2>/dev/null || break; sleep 0.5; done
grep -q "step 2/" "$work/log" || { cat "$work/log"; fail "training did not reach step 2"; }
kill -TERM $pid
rc=0
wait $pid || rc=$?
[[ $rc == 3 ]] || { tail -20 "$work/log"; fail "SIGTERM to launch/local.sh: exit $rc, expected 3"; }
grep -q "stop signal received" "$work/log" || fail "the ranks never saw the stop"
ls "$work"/run/checkpoints/step-*.h5 > /dev/null 2>&1 || fail "no checkpoint written"
echo "OK: launch/local.sh: exit 3 with $(ls "$work"/run/checkpoints)"

# A bare mpirun: started with OMPI_MCA_odls_base_sigkill_timeout=10 (docs/train.md), its SIGTERM
# reaches the ranks 10 s later and SIGKILL 10 s after that: time to finish a 3-s step and write the
# checkpoint. mpirun itself exits non-zero (it ends a job it was told to end), the ranks with 3.
mpirun_cmd=(mpirun --oversubscribe -np 2)
[[ $(id -u) == 0 ]] && mpirun_cmd+=(--allow-run-as-root)
OMPI_MCA_odls_base_sigkill_timeout=10 "${mpirun_cmd[@]}" "$KILN_BIN" train "$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml" \
  train.micro_batch=1024 train.global_batch=2048 train.max_steps=200 train.log_every=1 \
  checkpoint.export_adapter=false checkpoint.run_dir="$work/bare" data.store_dir="$work/store" > "$work/log_bare" 2>&1 &
pid=$!
for _ in $(seq 1 1200); do grep -q "step 2/" "$work/log_bare" && break; kill -0 $pid 2>/dev/null || break; sleep 0.5; done
grep -q "step 2/" "$work/log_bare" || { cat "$work/log_bare"; fail "bare mpirun: training did not reach step 2"; }
grep -q "pre-emption under a bare mpirun" "$work/log_bare" && fail "bare mpirun: advice printed although the timeout is set"
kill -TERM $pid
wait $pid || true
grep -q "stopped at step" "$work/log_bare" || { tail -20 "$work/log_bare"; fail "bare mpirun: the ranks did not stop with a checkpoint"; }
ls "$work"/bare/checkpoints/step-*.h5 > /dev/null 2>&1 || fail "bare mpirun: no checkpoint written"
echo "OK: bare mpirun with OMPI_MCA_odls_base_sigkill_timeout=10: $(ls "$work"/bare/checkpoints)"

# Without the setting, kiln says at the start what a SIGTERM to a bare mpirun would cost.
"${mpirun_cmd[@]}" "$KILN_BIN" train "$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml" train.max_steps=1 \
  checkpoint.export_adapter=false checkpoint.run_dir="$work/advice" data.store_dir="$work/store" > "$work/log_advice" 2>&1 \
  || { tail "$work/log_advice"; fail "the 1-step bare mpirun run failed"; }
grep -q "pre-emption under a bare mpirun" "$work/log_advice" || fail "no advice about SIGTERM under a bare mpirun"
echo "OK: $(grep -o 'pre-emption under a bare mpirun[^.]*' "$work/log_advice" | head -1)"
