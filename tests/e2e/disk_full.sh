#!/usr/bin/env bash
# A full disk loses nothing and crashes nothing (issue 18, item 3): a checkpoint, an adapter, a
# merged export and a data store that cannot be written each end with one line naming the file and
# "No space left on device", exit 1, and no partial file under a name a later run could take for
# valid; a run whose final adapter export failed is written again by the rerun. The disks are small
# tmpfs mounts, so the test needs root (mount); it reports itself skipped (77) where it cannot mount.
# Needs KILN_BIN, KILN_SOURCE_DIR (set by ctest).
set -uo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d)
mounts=()
cleanup() { for m in "${mounts[@]}"; do umount "$m" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
small_disk() {  # small_disk DIR SIZE
  mkdir -p "$1"
  mount -t tmpfs -o size="$2" tmpfs "$1" 2>/dev/null || { echo "SKIP: cannot mount a tmpfs here (needs root): $1"; exit 77; }
  mounts+=("$1")
}
fill() {  # fill DIR: leaves about 8 KiB free
  local free; free=$(( $(stat -f -c '%a*%S' "$1") ))
  head -c $(( free - 8192 )) /dev/zero > "$1/filler"
}
expect_enospc() {  # expect_enospc LOG RC WHAT FILE
  [[ $2 == 1 ]] || { tail -5 "$1"; fail "$3: exit $2, expected 1"; }
  grep -q "kiln: error.*cannot write $4.*No space left on device" "$1" || { tail -5 "$1"; fail "$3: no one-line error naming $4"; }
  [[ $(grep -c "kiln: error" "$1") == 1 ]] || { cat "$1"; fail "$3: more than one error line"; }
}
recipe=$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml
common=(train.max_steps=6 train.micro_batch=32 train.global_batch=32 data.max_eval_examples=32 checkpoint.every=3)

# 1. A checkpoint on a full disk.
small_disk "$work/d1" 128k
"$KILN_BIN" train "$recipe" "${common[@]}" checkpoint.run_dir="$work/d1/run" data.store_dir="$work/store" > "$work/log1" 2>&1
expect_enospc "$work/log1" $? "checkpoint" "$work/d1/run/checkpoints/step-00000003.h5"
! ls "$work/d1/run/checkpoints/" 2>/dev/null | grep -q . || fail "checkpoint: files left in checkpoints/: $(ls "$work/d1/run/checkpoints")"
echo "OK checkpoint: $(grep 'kiln: error' "$work/log1")"

# 2. The final adapter export on a full disk; the rerun of the finished run writes it.
small_disk "$work/d2" 4m
run=$work/d2/run
"$KILN_BIN" train "$recipe" "${common[@]}" checkpoint.export_adapter=false checkpoint.run_dir="$run" data.store_dir="$work/store" > "$work/log2a" 2>&1 || fail "training for the export case failed"
fill "$work/d2"
"$KILN_BIN" train "$recipe" "${common[@]}" checkpoint.run_dir="$run" data.store_dir="$work/store" > "$work/log2b" 2>&1
expect_enospc "$work/log2b" $? "adapter" "$run/adapter"
ls -d "$run"/adapter* 2>/dev/null && fail "adapter: a partial adapter folder was left"
rm "$work/d2/filler"
"$KILN_BIN" train "$recipe" "${common[@]}" checkpoint.run_dir="$run" data.store_dir="$work/store" > "$work/log2c" 2>&1 || { tail "$work/log2c"; fail "the rerun failed"; }
[[ -f $run/adapter/adapter_model.safetensors && -f $run/adapter/adapter_config.json ]] || fail "the rerun did not write the adapter"
echo "OK adapter: $(grep 'kiln: error' "$work/log2b"); the rerun wrote it"

# 3. kiln export --merged onto a full disk.
small_disk "$work/d3" 64k
"$KILN_BIN" export "$recipe" "${common[@]}" checkpoint.run_dir="$run" data.store_dir="$work/store" --merged --out "$work/d3/merged" > "$work/log3" 2>&1
rc=$?
[[ $rc == 1 ]] || { tail -5 "$work/log3"; fail "merged export: exit $rc, expected 1"; }
grep -q "kiln: error.*cannot write $work/d3/merged.*No space left on device" "$work/log3" || { tail -5 "$work/log3"; fail "merged export: no one-line error"; }
ls -d "$work"/d3/merged* 2>/dev/null && fail "merged export: a partial folder was left"
echo "OK export: $(grep 'kiln: error' "$work/log3")"

# 4. A data store on a full disk.
small_disk "$work/d4" 64k
"$KILN_BIN" preprocess "$recipe" data.store_dir="$work/d4/store" > "$work/log4" 2>&1
expect_enospc "$work/log4" $? "store" "$work/d4/store/"
ls "$work/d4/store" 2>/dev/null | grep -E '\.h5' && fail "store: a partial store file was left"
echo "OK store: $(grep 'kiln: error' "$work/log4")"
