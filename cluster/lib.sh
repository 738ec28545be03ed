# Shared by the sbatch scripts in cluster/ (sourced, not run). Slurm runs a copy of the batch script
# from its spool directory, so the scripts find the repository through KILN_HOME (default: the
# directory sbatch was called from, SLURM_SUBMIT_DIR) and the binary through KILN_BIN (default:
# $KILN_HOME/build/kiln).
#
# The pre-emption protocol, end to end:
#   Slurm sends SIGUSR1 to the ranks 120 s before the time limit (or when an admin/scheduler does
#   `scancel --signal=USR1`) -> every rank finishes its step, kiln writes a checkpoint and exits with
#   code 3 -> kiln_finish sees 3 and calls `scontrol requeue $SLURM_JOB_ID` -> the job goes back to
#   the queue with the same id, log file and run directory -> on restart SLURM_RESTART_COUNT > 0 and
#   kiln is started with checkpoint.resume=auto, which continues from the newest checkpoint.

KILN_EXIT_PREEMPTED=3   # kiln's exit code after a signal-triggered checkpoint (docs/train.md)

kiln_setup() {
  : "${SLURM_JOB_ID:?cluster/ scripts run under sbatch (SLURM_JOB_ID is not set)}"
  KILN_HOME=${KILN_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
  KILN_BIN=${KILN_BIN:-$KILN_HOME/build/kiln}
  [[ -x $KILN_BIN ]] || { echo "kiln: no executable at KILN_BIN=$KILN_BIN (build it, or export KILN_BIN)" >&2; exit 2; }
  [[ $# -ge 1 ]] || { echo "kiln: usage: sbatch cluster/<script>.sbatch RECIPE.yaml [key=value ...]" >&2; exit 2; }
  # The job runs where it was submitted (or --chdir): relative recipe paths, the default run
  # directory (checkpoints/<recipe name>) and the Slurm log all resolve against that directory.
  # KILN_ARGS: what follows `kiln` on every rank.
  KILN_ARGS=(train "$1")
  # Threads per rank: what Slurm gave each task. Exported for libraries that read it (OpenMP, BLAS)
  # and passed to kiln as train.threads, before the user's overrides so those still win.
  if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then
    export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
    KILN_ARGS+=("train.threads=$SLURM_CPUS_PER_TASK")
  fi
  KILN_ARGS+=("${@:2}")
  # A restarted (requeued) job must continue, whatever the first submission said about resuming.
  if [[ ${SLURM_RESTART_COUNT:-0} -gt 0 ]]; then
    KILN_ARGS+=("checkpoint.resume=auto")
  fi
  echo "kiln-slurm: job $SLURM_JOB_ID ($SLURM_JOB_NAME) restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NUM_NODES:-1} node(s) [${SLURM_JOB_NODELIST:-?}]," \
    "${SLURM_NTASKS:-?} task(s), ${SLURM_CPUS_PER_TASK:-?} cpu(s)/task, GPUs ${SLURM_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-none}}/node; $(date -Is)"
  echo "kiln-slurm: $KILN_BIN ${KILN_ARGS[*]} (in $PWD)"
}

# kiln_finish RC: the end of every batch script. Exit code 3 means "checkpointed on a signal, not done".
kiln_finish() {
  local rc=$1
  if [[ $rc -eq $KILN_EXIT_PREEMPTED ]]; then
    if [[ ${KILN_REQUEUE:-1} == 1 ]]; then
      echo "kiln-slurm: kiln checkpointed on a signal (exit 3); requeueing job $SLURM_JOB_ID at $(date -Is)"
      if scontrol requeue "$SLURM_JOB_ID"; then
        # slurmctld now ends this script (SIGTERM) and queues the job again under the same id;
        # wait for that instead of finishing first.
        echo "kiln-slurm: requeued; the job restarts under id $SLURM_JOB_ID and resumes from the checkpoint"
        sleep 300 || true
        exit "$rc"
      fi
      echo "kiln-slurm: scontrol requeue $SLURM_JOB_ID failed (submitted with --no-requeue?); resubmit the script to resume" >&2
    else
      echo "kiln-slurm: kiln checkpointed on a signal (exit 3); KILN_REQUEUE=0, not requeueing"
    fi
  else
    echo "kiln-slurm: kiln exited with code $rc at $(date -Is)"
  fi
  exit "$rc"
}
