#!/usr/bin/env bash
# Slurm + MPI without kiln: a 2-task sbatch job runs a 2-rank MPI program with srun --mpi=pmix, with
# mpirun inside the allocation, and with launch/mpirun.sh inside the allocation. When the kiln
# Slurm tests fail, this one says whether Slurm/MPI or kiln is to blame.
#   KILN_MPI_HELLO=path/to/slurm_mpi_hello bash tests/e2e/slurm_mpi.sh
export KILN_SLURM_ACCOUNTING=${KILN_SLURM_ACCOUNTING:-0}  # no sacct needed: start faster
source "$(dirname "${BASH_SOURCE[0]}")/slurm_common.sh"
HELLO=${KILN_MPI_HELLO:?set KILN_MPI_HELLO to the slurm_mpi_hello binary}
[[ -x $HELLO ]] || fail "no executable $HELLO"

slurm_start slurm-mpi
allow_root=""; [[ $(id -u) -eq 0 ]] && allow_root=--allow-run-as-root
cat >"$WORK/hello.sbatch" <<JOB
#!/bin/bash
#SBATCH --job-name=mpi-hello
#SBATCH --ntasks=2
#SBATCH --time=5
set -u
echo "launcher=srun-pmix"
srun --mpi=pmix "$HELLO" || echo "launcher=srun-pmix failed: \$?"
echo "launcher=mpirun"
mpirun $allow_root "$HELLO" || echo "launcher=mpirun failed: \$?"
echo "launcher=launch/mpirun.sh"
bash "$KILN_SOURCE_DIR/launch/mpirun.sh" "$HELLO" || echo "launcher=launch/mpirun.sh failed: \$?"
JOB
submit --output="$WORK/hello.log" "$WORK/hello.sbatch"
wait_job "$JOB" 120
show_accounting "$JOB"
echo "----- job output"
cat "$WORK/hello.log"
echo "-----"
[[ $STATE == COMPLETED ]] || fail "job $JOB ended $STATE"

# Each launcher's block must hold exactly ranks 0 and 1 of a world of 2, on one node, summing to 3.
for launcher in srun-pmix mpirun launch/mpirun.sh; do
  block=$(awk -v l="launcher=$launcher" '$0==l{on=1;next} /^launcher=/{on=0} on' "$WORK/hello.log")
  grep -q "failed" <<<"$block" && fail "$launcher: the program failed"
  for r in 0 1; do
    grep -qE "^hello rank=$r size=2 local_rank=$r host=[^ ]+ sum=3 " <<<"$block" ||
      fail "$launcher: no line for rank $r of 2 (output above)"
  done
  [[ $(grep -c '^hello ' <<<"$block") -eq 2 ]] || fail "$launcher: expected 2 ranks"
done
# srun must have started the ranks itself (PMIx), not via a nested mpirun.
awk '/^launcher=srun-pmix/{on=1;next} /^launcher=/{on=0} on' "$WORK/hello.log" | grep -q 'SLURM_PROCID=1 PMIX_RANK=1' ||
  fail "srun-pmix: rank 1 was not given SLURM_PROCID/PMIX_RANK by srun"
say "PASS: srun --mpi=pmix, mpirun and launch/mpirun.sh each ran 2 ranks in a 2-task Slurm job"
