#!/usr/bin/env bash
# Retention never deletes what a run depends on (issue 18, item 1), as the issue reproduced it: a
# finished 20-step run with checkpoint.every=5 (all kept); 16 bytes flipped in the middle of step-10, -15 and
# -20; the rerun (checkpoint.keep=3) resumes from step 5 and gets SIGUSR1 as soon as it says "resumed from". It must
# exit 3 keeping step-5 and the step it just wrote, with the corrupt files renamed *.corrupt (before
# the fix it deleted both good ones and the next rerun failed with "all 3 are corrupt"); the next
# rerun finishes from there.
# Needs KILN_BIN, KILN_SOURCE_DIR (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
run=$work/run
args=("$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml" train.micro_batch=128 train.global_batch=128 train.max_steps=20
      train.log_every=1 checkpoint.every=5 checkpoint.keep=3 checkpoint.export_adapter=false data.max_eval_examples=64
      checkpoint.run_dir="$run" data.store_dir="$work/store")
"$KILN_BIN" train "${args[@]}" checkpoint.keep=0 > "$work/log1" 2>&1 || { tail "$work/log1"; fail "the first run failed"; }
ls "$run/checkpoints"
for s in 10 15 20; do
  f=$run/checkpoints/step-000000$s.h5
  python3 - "$f" <<'PY'
import os, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    f.seek(os.path.getsize(p) // 2)
    data = f.read(16)
    f.seek(os.path.getsize(p) // 2)
    f.write(bytes(b ^ 0xFF for b in data))
PY
done
"$KILN_BIN" train "${args[@]}" > "$work/log2" 2>&1 &
pid=$!
for _ in $(seq 1 12000); do grep -q "resumed from" "$work/log2" && break; kill -0 $pid 2>/dev/null || break; sleep 0.05; done
grep -q "resumed from .*step-00000005.h5" "$work/log2" || { cat "$work/log2"; fail "the rerun did not resume from step 5"; }
kill -USR1 $pid
rc=0; wait $pid || rc=$?
[[ $rc == 3 ]] || { tail -20 "$work/log2"; fail "exit $rc after SIGUSR1, expected 3"; }
ls "$run/checkpoints"
[[ -f $run/checkpoints/step-00000005.h5 ]] || fail "step-5, the checkpoint resumed from, was deleted"
newest=$(ls "$run/checkpoints" | grep -E '^step-[0-9]+\.h5$' | tail -1)
[[ $newest != step-00000005.h5 ]] || fail "the checkpoint written on the stop is missing"
for s in 10 15 20; do
  [[ -f $run/checkpoints/step-000000$s.h5.corrupt ]] || fail "step-$s was not kept as .corrupt"
done
"$KILN_BIN" train "${args[@]}" > "$work/log3" 2>&1 || { tail "$work/log3"; fail "the third run failed"; }
grep -q "resumed from .*$newest" "$work/log3" || fail "the third run did not resume from $newest"
[[ -f $run/checkpoints/step-00000020.h5 && -f $run/results.json ]] || fail "the third run did not finish"
echo "OK: stop at $newest kept step-5; the rerun finished"
