#!/usr/bin/env bash
# launch/mpirun.sh and launch/local.sh: the mpirun command each layout turns into (--dry-run), the
# one-line errors for bad layouts and host files, and a real 2-rank run on this machine. Also, with
# no Slurm needed: physical cores counted on a fake SMT /sys, CUDA_VISIBLE_DEVICES kept on its node,
# and the srun / mpirun lines the cluster/*.sbatch scripts run (fake srun and mpirun) (issue 33).
set -euo pipefail
src=${KILN_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
HELLO=${KILN_MPI_HELLO:?set KILN_MPI_HELLO to the slurm_mpi_hello binary}
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# Outside any Slurm job, whatever ctest's environment holds.
unset SLURM_JOB_ID SLURM_JOB_NUM_NODES SLURM_NTASKS SLURM_NTASKS_PER_NODE SLURM_CPUS_PER_TASK SLURM_CPUS_ON_NODE
# This machine's physical cores, as lscpu counts them (hardware threads of one core counted once).
if command -v lscpu >/dev/null; then
  cores=$(lscpu -p=CORE,SOCKET | grep -v '^#' | sort -u | wc -l)
else
  cores=$(nproc --all)
fi

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

# CUDA_VISIBLE_DEVICES names GPUs of the launch node: not forced onto the other nodes' ranks; the
# other CUDA_* settings are.
line=$(CUDA_VISIBLE_DEVICES=0 CUDA_LAUNCH_BLOCKING=1 CUDA_MODULE_LOADING=LAZY dry -np 1 ./prog)
expect "CUDA_* forwarded" "$line" "-x CUDA_LAUNCH_BLOCKING " "-x CUDA_MODULE_LOADING "
[[ $line != *CUDA_VISIBLE_DEVICES* ]] || fail "CUDA_VISIBLE_DEVICES is forwarded to the ranks: $line"

# Physical cores, not hardware threads (KILN_SYSFS_ROOT: a fake /sys). smt: 4 cores x 2 threads,
# Linux's numbering (cpu N and N+4 share a core), plus an offline cpu8. old: a kernel without
# core_cpus_list, 2 sockets x 2 cores x 2 threads, sibling lists as ranges.
fake_cpu() {  # fake_cpu ROOT CPU SIBLINGS [FILE]
  local d=$1/devices/system/cpu/cpu$2/topology
  mkdir -p "$d"; echo "$3" >"$d/${4:-core_cpus_list}"
}
for c in 0 1 2 3; do fake_cpu "$work/smt" $c "$c,$((c + 4))"; fake_cpu "$work/smt" $((c + 4)) "$c,$((c + 4))"; done
fake_cpu "$work/smt" 8 8; echo 0 >"$work/smt/devices/system/cpu/cpu8/online"
for c in 0 1 2 3 4 5 6 7; do fake_cpu "$work/old" $c "$((c / 2 * 2))-$((c / 2 * 2 + 1))" thread_siblings_list; done
mkdir -p "$work/empty/devices/system/cpu"
sdry() { KILN_SYSFS_ROOT=$1 bash "$src/launch/mpirun.sh" --dry-run "${@:2}" 2>&1; }
line=$(sdry "$work/smt" -np 1 ./prog)
expect "SMT: one rank, 4 cores" "$line" "4 cores per host" "--map-by ppr:1:node:PE=4 " "--bind-to core"
line=$(sdry "$work/smt" -np 2 ./prog)
expect "SMT: 2 ranks x 2 cores" "$line" "2 thread\(s\) per rank" "--map-by ppr:2:node:PE=2 " "--bind-to core"
line=$(sdry "$work/smt" -np 2 --threads 4 ./prog)  # counted as 8 CPUs this was PE=4 x 2: refused by mpirun
expect "SMT: 2 x 4 threads > 4 cores" "$line" "--bind-to none" "--oversubscribe"
line=$(sdry "$work/smt" --cores-per-node 8 -np 1 ./prog)
expect "SMT: --cores-per-node wins" "$line" "8 cores per host" "--map-by ppr:1:node:PE=8 "
line=$(sdry "$work/old" -np 1 ./prog)
expect "thread_siblings_list, 2 sockets" "$line" "4 cores per host" "--map-by ppr:1:node:PE=4 "
line=$(sdry "$work/empty" -np 1 ./prog)
expect "no topology: nproc" "$line" "$(nproc --all) cores per host" "--map-by ppr:1:node:PE=$(nproc --all) "

# The cluster/ scripts outside Slurm: a fake Slurm environment, and srun / mpirun / scontrol that
# print how they were called. Since Slurm 22.05 srun does not take --cpus-per-task from sbatch, so
# the srun scripts pass it; mpirun's daemons (started with srun on other nodes) must not get it.
mkdir -p "$work/bin" "$work/job"
for t in srun mpirun scontrol; do
  printf '#!/bin/bash\necho "%s SRUN_CPUS_PER_TASK=${SRUN_CPUS_PER_TASK-unset} $*"\n' "$t" >"$work/bin/$t"
  chmod +x "$work/bin/$t"
done
printf '#!/bin/bash\necho "kiln $*"\n' >"$work/bin/kiln"; chmod +x "$work/bin/kiln"
sjob() {  # sjob SCRIPT [CPUS_PER_TASK]: runs cluster/SCRIPT as a 1-node, 2-task job would (3 CPUs per task)
  local cpt=${2-3}
  (cd "$work/job" && export PATH=$work/bin:$PATH MPIRUN=$work/bin/mpirun KILN_HOME=$src KILN_BIN=$work/bin/kiln \
    SLURM_JOB_ID=7 SLURM_JOB_NAME=kiln SLURM_SUBMIT_DIR=$work/job SLURM_JOB_NUM_NODES=1 SLURM_NTASKS=2 \
    SLURM_NTASKS_PER_NODE=2 SLURM_CPUS_ON_NODE=6 && { [[ -z $cpt ]] || export SLURM_CPUS_PER_TASK=$cpt; } &&
    bash "$src/cluster/$1" r.yaml 2>&1)
}
for script in single_node.sbatch multi_node.sbatch; do
  out=$(sjob "$script") || fail "$script exited $?: $out"
  line=$(grep '^srun ' <<<"$out") || fail "$script ran no srun: $out"
  expect "$script: srun gets --cpus-per-task" "$line" "^srun SRUN_CPUS_PER_TASK=unset --mpi=pmix --cpus-per-task=3 $work/bin/kiln train r.yaml train.threads=3"
done
out=$(sjob single_node.sbatch "") || fail "single_node.sbatch without cpus-per-task: $out"
line=$(grep '^srun ' <<<"$out")
expect "no --cpus-per-task given: none passed" "$line" "^srun SRUN_CPUS_PER_TASK=unset --mpi=pmix $work/bin/kiln train r.yaml$"
out=$(export SRUN_CPUS_PER_TASK=3; sjob mpirun.sbatch) || fail "mpirun.sbatch exited $?: $out"
line=$(grep '^mpirun ' <<<"$out") || fail "mpirun.sbatch ran no mpirun: $out"
expect "mpirun.sbatch: PE=cpus-per-task, no SRUN_CPUS_PER_TASK for the daemons" "$line" \
  "^mpirun SRUN_CPUS_PER_TASK=unset -np 2 " "--map-by ppr:2:node:PE=3 --bind-to core" "$work/bin/kiln train r.yaml train.threads=3"

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
