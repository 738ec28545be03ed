#!/usr/bin/env bash
# Fuzzes kiln's file readers with libFuzzer (the `sanitize` preset's build: clang, ASan + UBSan).
#   scripts/fuzz.sh [SECONDS] [TARGET...]   default: 600 s for each target in build-sanitize/fuzz/targets.txt
#                                           (0: only minimize the committed corpora)
# Each target starts from its committed corpus (tests/**/corpus/<target>/); inputs that reach new
# code are merged back into it (commit them: ctest replays every corpus on every run). A finding
# stops that target and leaves the input as build-sanitize/fuzz/findings/<target>/crash-* (or
# leak-, timeout-, oom-); reproduce with `build-sanitize/fuzz/<target> FILE`. Exit 1 if any target found one.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-600}
shift || true
KILN_EXTRA_PACKAGES="clang libclang-rt-dev ${KILN_EXTRA_PACKAGES:-}" bash "$root/scripts/install-deps.sh"
cd "$root"
cmake --preset sanitize >/dev/null
build=$root/build-sanitize
mapfile -t all < <(cut -d' ' -f1 "$build/fuzz/targets.txt")
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

export ASAN_OPTIONS="detect_leaks=1:suppressions=$root/tests/sanitize/asan.supp"
export LSAN_OPTIONS="suppressions=$root/tests/sanitize/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$root/tests/sanitize/ubsan.supp"
export OMP_NUM_THREADS=1
failed=0
for t in "${targets[@]}"; do
  corpus=$(awk -v t="$t" '$1 == t {print $2}' "$build/fuzz/targets.txt")
  [[ -n $corpus ]] || { echo "fuzz: unknown target $t (known: ${all[*]})" >&2; exit 2; }
  work=$build/fuzz/work/$t findings=$build/fuzz/findings/$t
  rm -rf "$work" && mkdir -p "$work" "$findings" "$corpus"
  echo "fuzz: $t for ${seconds} s from $(ls "$corpus" | wc -l) corpus inputs"
  rc=0
  if [[ $seconds -gt 0 ]]; then
    "$build/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$findings/" "$work" "$corpus" >"$build/fuzz/$t.log" 2>&1 || rc=$?
    grep -E "^stat::number_of_executed_units|^stat::new_units_added|^stat::peak_rss_mb" "$build/fuzz/$t.log" | tr '\n' ' '
    echo
  fi
  before=$(ls "$corpus" | wc -l)
  # The committed corpus: the named inputs (seed-*, finding-*) plus the fewest others that reach
  # every edge the whole set reaches (-use_counters=0: edges, not hit counts, keeps it small).
  fresh=$build/fuzz/merged/$t
  rm -rf "$fresh" && mkdir -p "$fresh"
  "$build/fuzz/$t" -merge=1 -use_counters=0 "$fresh" "$corpus" "$work" >>"$build/fuzz/$t.log" 2>&1 || true
  if [[ -n $(ls "$fresh") ]]; then
    find "$corpus" -type f ! -name 'seed-*' ! -name 'finding-*' -delete
    named=$(cd "$corpus" && sha1sum -- * 2>/dev/null | cut -d' ' -f1)
    for f in "$fresh"/*; do
      grep -qx "$(basename "$f")" <<<"$named" || cp "$f" "$corpus/"
    done
  fi
  echo "fuzz: $t corpus $before -> $(ls "$corpus" | wc -l) inputs"
  if [[ $rc -ne 0 ]]; then
    failed=1
    echo "fuzz: $t FOUND something (exit $rc): $(ls "$findings")"
    grep -m3 -E "ERROR: |runtime error|uncaught|==ERROR" "$build/fuzz/$t.log" || tail -5 "$build/fuzz/$t.log"
  fi
done
exit $failed
