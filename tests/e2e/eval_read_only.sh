#!/usr/bin/env bash
# `kiln eval` and `kiln export` write nothing into the training run directory (issue 18, item 4):
# evaluating on another eval file tokenizes it into the cache ($KILN_CACHE_DIR), not into the run's
# data/; a run directory that does not exist is an error (exit 2) that creates nothing.
# Needs KILN_BIN, KILN_SOURCE_DIR (set by ctest).
set -uo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export KILN_CACHE_DIR=$work/cache
recipe=$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml
run=$work/run
args=(train.max_steps=3 train.micro_batch=32 train.global_batch=32 data.max_eval_examples=32 checkpoint.run_dir="$run")
"$KILN_BIN" train "$recipe" "${args[@]}" > "$work/train.log" 2>&1 || { tail "$work/train.log"; fail "training failed"; }
snapshot() { (cd "$run" && find . -print0 | sort -z | xargs -0 stat -c '%n %s %Y' && find . -type f -print0 | sort -z | xargs -0 md5sum); }
snapshot > "$work/before"

# Another eval file: its store goes to the cache.
head -21 "$KILN_SOURCE_DIR/datasets/sst2/dev.tsv" > "$work/other_dev.tsv"
"$KILN_BIN" eval "$recipe" "${args[@]}" data.eval="$work/other_dev.tsv" > "$work/eval.json" 2> "$work/eval.log" \
  || { tail "$work/eval.log"; fail "eval on another file failed"; }
grep -q '"accuracy"' "$work/eval.json" || fail "no accuracy in the eval output"
ls "$KILN_CACHE_DIR"/stores/*/eval.h5 > /dev/null 2>&1 || fail "the other eval file was not tokenized into the cache"
# The same again reuses the cache, and an export with the run's own data reads the run's stores.
"$KILN_BIN" eval "$recipe" "${args[@]}" data.eval="$work/other_dev.tsv" > /dev/null 2> "$work/eval2.log" || fail "second eval failed"
grep -q "tokenizing" "$work/eval2.log" && fail "the second eval tokenized again instead of reusing the cache"
"$KILN_BIN" export "$recipe" "${args[@]}" --out "$work/exported" > "$work/export.log" 2>&1 || { tail "$work/export.log"; fail "export failed"; }
snapshot > "$work/after"
diff "$work/before" "$work/after" > "$work/diff" || { cat "$work/diff"; fail "eval or export changed the run directory"; }

# A run directory that does not exist.
"$KILN_BIN" eval "$recipe" "${args[@]}" checkpoint.run_dir="$work/no_such_run" > /dev/null 2> "$work/missing.log"
rc=$?
[[ $rc == 2 ]] || { cat "$work/missing.log"; fail "eval of a missing run directory: exit $rc, expected 2"; }
grep -q "kiln: error: .*$work/no_such_run" "$work/missing.log" || { cat "$work/missing.log"; fail "the error does not name the directory"; }
[[ ! -e $work/no_such_run ]] || fail "eval created $work/no_such_run"
"$KILN_BIN" eval "$recipe" "${args[@]}" --checkpoint "$work/no_such_file.h5" > /dev/null 2> "$work/missing2.log"
[[ $? == 2 ]] || fail "eval of a missing --checkpoint: not exit 2"
echo "OK: eval and export left $run as it was; $(grep 'kiln: error' "$work/missing.log")"
