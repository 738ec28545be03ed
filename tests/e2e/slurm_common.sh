# Sourced by the tests/e2e/slurm_*.sh tests: a private Slurm for the test's lifetime (torn down on
# any exit, with its logs printed when the test failed) and helpers to submit and follow jobs. Every
# Slurm command is echoed with a `$ ` prefix, so the test log reads as a session at the terminal.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KILN_SOURCE_DIR=${KILN_SOURCE_DIR:-$(cd "$E2E_DIR/../.." && pwd)}
KILN_SHARED_DIR=${KILN_SHARED_DIR:-$KILN_SOURCE_DIR/../shared}

fail() { echo "FAIL: $*" >&2; exit 1; }
say() { echo "== $*"; }
run() { echo "\$ $*"; "$@"; }

# slurm_start NAME: a fresh work directory and a running one-node Slurm in it.
slurm_start() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/kiln-$1.XXXXXX")
  SLURM_DIR=$WORK/slurm
  trap slurm_cleanup EXIT
  local rc=0 out
  out=$(bash "$E2E_DIR/slurm_local.sh" up "$SLURM_DIR") || rc=$?
  if [[ $rc -eq 77 ]]; then
    echo "SKIP: no Slurm here and it cannot be installed (not root)"
    exit 77
  fi
  [[ $rc -eq 0 ]] || fail "could not start the local Slurm (slurm_local.sh up exited $rc)"
  eval "$out"   # export SLURM_CONF=...
  say "local Slurm up: $SLURM_CONF"
  run sinfo
}

slurm_cleanup() {
  local rc=$?
  set +e
  if [[ $rc -ne 0 && $rc -ne 77 ]]; then
    echo "== test failed (exit $rc); daemon logs follow"
    bash "$E2E_DIR/slurm_local.sh" logs "$SLURM_DIR"
    for f in "$WORK"/*.log; do [[ -f $f ]] && { echo "----- $f"; tail -n 60 "$f"; }; done
  fi
  bash "$E2E_DIR/slurm_local.sh" down "$SLURM_DIR"
  if [[ $rc -eq 0 || -n ${KILN_KEEP_WORK:-} ]]; then
    [[ -n ${KILN_KEEP_WORK:-} ]] && echo "== kept $WORK" || rm -rf "$WORK"
  else
    echo "== kept $WORK for inspection"
  fi
  exit $rc
}

# submit ARGS...: sbatch --parsable; sets JOB.
submit() {
  echo "\$ sbatch $*"
  JOB=$(sbatch --parsable "$@") || fail "sbatch refused the job"
  echo "Submitted batch job $JOB"
}

job_field() {  # job_field JOB Key -> the value of Key= in `scontrol show job -o`
  scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# wait_job JOB TIMEOUT_S [UNTIL_STATE]: follows the job, printing `squeue` whenever its state
# changes, until it reaches a final state (or UNTIL_STATE); sets STATE.
wait_job() {
  local job=$1 limit=$2 until=${3:-} last="" restarts t0=$SECONDS
  while true; do
    STATE=$(job_field "$job" JobState)
    restarts=$(job_field "$job" Restarts)
    if [[ "$STATE/$restarts" != "$last" ]]; then
      echo "\$ squeue -j $job   # after $((SECONDS - t0)) s"
      squeue -j "$job" -o '%.8i %.9P %.10j %.8u %.10T %.8M %.6D %R' 2>/dev/null || true
      last="$STATE/$restarts"
    fi
    [[ -n $until && $STATE == "$until" ]] && return 0
    case $STATE in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED) return 0 ;;
    esac
    (( SECONDS - t0 < limit )) || fail "job $job still $STATE after $limit s"
    sleep 1
  done
}

# The job's record as Slurm keeps it. This Slurm has no slurmdbd, so there is no sacct; the
# controller's record (scontrol) and the job completion log (jobcomp/filetxt) stand in for it.
show_accounting() {
  local job=$1
  echo "\$ scontrol show job $job | grep -E 'JobId|JobState|Restarts|RunTime|NumTasks|TRES|StdOut'"
  scontrol show job "$job" | grep -E 'JobId|JobState|Restarts|RunTime|NumTasks|TRES|StdOut' || true
  echo "\$ grep JobId=$job $SLURM_DIR/jobcomp.txt   # jobcomp/filetxt: one line per finished run"
  grep "JobId=$job " "$SLURM_DIR/jobcomp.txt" || true
}

# The kiln binary the tests drive (ctest passes KILN_BIN).
need_kiln() {
  KILN_BIN=${KILN_BIN:-$KILN_SOURCE_DIR/build/kiln}
  [[ -x $KILN_BIN ]] || fail "no kiln binary at KILN_BIN=$KILN_BIN"
}
