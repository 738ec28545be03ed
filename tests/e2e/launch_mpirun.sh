#!/usr/bin/env bash
# launch/mpirun.sh and launch/local.sh: the mpirun command each layout turns into (--dry-run), the
# one-line errors for bad layouts and host files, and a real 2-rank run on this machine.
set -euo pipefail
src=${KILN_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
HELLO=${KILN_MPI_HELLO:?set KILN_MPI_HELLO to the slurm_mpi_hello binary}
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# Outside any Slurm job, whatever ctest's environment holds.
unset SLURM_JOB_ID SLURM_JOB_NUM_NODES SLURM_NTASKS SLURM_NTASKS_PER_NODE SLURM_CPUS_PER_TASK SLURM_CPUS_ON_NODE
cores=$(nproc --all)

dry() { bash "$src/launch/mpirun.sh" --dry-run "$@" 2>/dev/null; }
expect() {  # expect "what" "command line" pattern...
  local what=$1 line=$2; shift 2
  for p in "$@"; do grep -qE -- "$p" <<<"$line" || fail "$what: '$p' not in: $line"; done
  echo "ok: $what -> $line"
}

# One rank per core: each pinned to its own core, 1 thread.
line=$(dry -np "$cores" ./prog a b)
expect "one rank per core" "$line" "-np $cores " "--map-by ppr:$cores:node:PE=1 " "--bind-to core" "-x OMP_NUM_THREADS" "\./prog a b"
[[ $line != *--oversubscribe* ]] || fail "one rank per core must not oversubscribe"
# One rank with every core.
line=$(dry -np 1 ./prog)
expect "one rank, all cores" "$line" "--map-by ppr:1:node:PE=$cores " "--bind-to core"
# More threads than cores: no binding, oversubscribed.
line=$(dry -np 2 --threads "$cores" ./prog)
expect "2 x $cores threads" "$line" "--bind-to none" "--oversubscribe" "--map-by ppr:2:node "
# A host file: ranks = hosts x GPUs per node, slots written out explicitly.
printf '# two nodes\nnode-a slots=8\n\nnode-b   # the second\n' >"$work/hosts"
line=$(dry --hostfile "$work/hosts" --gpus-per-node 4 --threads 16 ./kiln train r.yaml)
expect "2 hosts x 4 GPUs x 16 threads" "$line" "-np 8 " "--hostfile " "--map-by ppr:4:node:PE=16 " "--bind-to core"
line=$(dry --hostfile "$work/hosts" --gpus-per-node 4 --cores-per-node 64 ./kiln train r.yaml)
expect "threads from --cores-per-node" "$line" "--map-by ppr:4:node:PE=16 "
line=$(dry --hostfile "$work/hosts" --gpus-per-node 4 --cores-per-node 8 --threads 4 ./kiln train r.yaml)
expect "4 x 4 threads > 8 cores" "$line" "--bind-to none" "--oversubscribe"
if [[ $(id -u) -eq 0 ]]; then expect "root" "$line" "--allow-run-as-root"; fi
KILN_SOME_SETTING=1 NCCL_DEBUG=INFO bash "$src/launch/mpirun.sh" --dry-run -np 1 ./prog 2>/dev/null |
  grep -q -- "-x KILN_SOME_SETTING .*-x NCCL_DEBUG\|-x NCCL_DEBUG .*-x KILN_SOME_SETTING" || fail "KILN_*/NCCL_* not exported to ranks"

# Bad input: exit 2 and one line naming the problem (and file:line for host files).
bad() {  # bad "pattern" args...
  local pat=$1 out rc=0; shift
  out=$(bash "$src/launch/mpirun.sh" --dry-run "$@" 2>&1 >/dev/null) || rc=$?
  [[ $rc -eq 2 ]] || fail "'$*' exited $rc, expected 2"
  [[ $(wc -l <<<"$out") -eq 1 ]] || fail "'$*' printed more than one line: $out"
  grep -qE -- "$pat" <<<"$out" || fail "'$*': '$pat' not in: $out"
  echo "ok: rejects $* -> $out"
}
printf 'node-a\nnode-b slot=2\n' >"$work/badhosts"
bad "badhosts:2: 'slot=2' is not slots=N" --hostfile "$work/badhosts" --gpus-per-node 2 ./prog
printf 'node-a\nnode-a\n' >"$work/twice"
bad "twice:2: host 'node-a' is listed twice" --hostfile "$work/twice" --gpus-per-node 2 ./prog
bad "give --gpus-per-node" --hostfile "$work/hosts" ./prog
bad "-np 3 does not match 2 hosts x 4" --hostfile "$work/hosts" --gpus-per-node 4 -np 3 ./prog
bad "--threads needs a positive integer" --threads 0 ./prog
bad "cannot be read" --hostfile "$work/none" --gpus-per-node 1 ./prog
bad "no program to run" -np 2
rc=0; out=$(bash "$src/launch/local.sh" --hostfile "$work/hosts" ./prog 2>&1) || rc=$?
[[ $rc -eq 2 && $out == *"this machine only"* ]] || fail "local.sh accepted a host file"

# A real run: 2 ranks on this machine, one world, each told its thread count.
out=$(bash "$src/launch/local.sh" -np 2 --threads 1 "$HELLO" 2>&1) || fail "2-rank run failed: $out"
echo "$out"
for r in 0 1; do grep -qE "^hello rank=$r size=2 local_rank=$r .* sum=3 " <<<"$out" || fail "no rank $r of 2"; done
echo "PASS: launch/mpirun.sh layouts, errors and a 2-rank run"
