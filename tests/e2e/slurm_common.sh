# Sourced by the tests/e2e/slurm_*.sh tests: a private Slurm for the test's lifetime (torn down on
# any exit, with its logs printed when the test failed) and helpers to submit and follow jobs. Every
# Slurm command is echoed with a `$ ` prefix, so the test log reads as a session at the terminal.
set -euo pipefail

# sacct needs slurmdbd + MariaDB (~20 s more to start); tests that show job records turn it on.
export KILN_SLURM_ACCOUNTING=${KILN_SLURM_ACCOUNTING:-1}
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

# The job's record as Slurm keeps it: sacct (every run of the job, --duplicates shows the requeued
# ones) when the test's Slurm has slurmdbd; always the controller's record and the completion log.
show_accounting() {
  local job=$1
  if grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$SLURM_CONF"; then
    # slurmctld hands records to slurmdbd asynchronously: wait until the end is there.
    for _ in $(seq 30); do
      sacct -n -X -j "$job" -o State 2>/dev/null | grep -qE 'COMPLETED|FAILED|CANCELLED|TIMEOUT' && break
      sleep 1
    done
    run sacct -j "$job" --duplicates -o JobID,JobName%12,State,ExitCode,Start,End,Elapsed,AllocCPUS,NNodes
  fi
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

# The tiny recipe the kiln jobs run (the README's main job, on the bundled stories260K model).
KILN_SLURM_RECIPE=${KILN_SLURM_RECIPE:-$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml}

# submit_kiln SCRIPT ARGS...: submits a REAL cluster/ script as a 2-task, 2-GPU, 1-CPU-per-task job
# (the scripts' 8-GPU defaults overridden on the command line, as users do), running in $WORK with
# its Slurm log at $WORK/slurm-<name>-<id>.log; sets JOB and JOB_LOG.
submit_kiln() {
  local script=$1; shift
  need_kiln
  [[ -f $KILN_SLURM_RECIPE ]] || fail "no recipe $KILN_SLURM_RECIPE"
  export KILN_HOME=$KILN_SOURCE_DIR KILN_BIN
  submit --job-name=kiln-e2e --chdir="$WORK" --output="$WORK/slurm-%x-%j.log" \
    --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=1 --time=15 \
    "$KILN_SOURCE_DIR/cluster/$script" "$KILN_SLURM_RECIPE" "$@"
  JOB_LOG=$WORK/slurm-kiln-e2e-$JOB.log
}

# check_layout LOG LAUNCHER: kiln's start-up layout shows ranks 0 and 1 of 2, each on this host
# with its own local rank, started by LAUNCHER.
check_layout() {
  local log=$1 launcher=$2 r
  for r in 0 1; do
    grep -qE "rank $r/2 host [^ ]+ local_rank $r/2 device cpu threads 1 launcher $launcher" "$log" ||
      fail "no layout line for rank $r/2 (launcher $launcher) in $log"
  done
  echo "ok: layout lines:"; grep -E "rank [01]/2 host " "$log" | sed 's/^/    /'
}

# metric_steps FILE: the steps of the train lines of metrics.jsonl, one per line.
metric_steps() {
  python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    m = json.loads(line)
    if m.get("split") == "train":
        print(m["step"])
PY
}
