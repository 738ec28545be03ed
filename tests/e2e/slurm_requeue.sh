#!/usr/bin/env bash
# Pre-emption under a real (local) Slurm, end to end, with the real cluster/ scripts:
#   slurm_requeue.sh srun    cluster/single_node.sbatch; SIGUSR1 to the job's steps, which is what
#                            `#SBATCH --signal=USR1@120` does at the time limit
#   slurm_requeue.sh mpirun  cluster/mpirun.sbatch; SIGUSR1 to the batch shell (--signal=B:USR1@120)
# kiln must checkpoint and exit 3, the script must requeue the job, and the restarted job must resume
# from that checkpoint's step and finish: final checkpoint, metrics.jsonl steps 1..N exactly once.
source "$(dirname "${BASH_SOURCE[0]}")/slurm_common.sh"
MODE=${1:-srun}
STEPS=${KILN_SLURM_REQUEUE_STEPS:-400}
case $MODE in
  srun) script=single_node.sbatch signal=(scancel --signal=USR1) launcher=srun ;;
  mpirun) script=mpirun.sbatch signal=(scancel --batch --signal=USR1) launcher=mpirun ;;
  *) fail "usage: slurm_requeue.sh srun|mpirun" ;;
esac

slurm_start "slurm-requeue-$MODE"
submit_kiln "$script" checkpoint.run_dir="$WORK/run" train.max_steps=$STEPS train.log_every=1 \
  checkpoint.keep=0 checkpoint.every=0
wait_job "$JOB" 300 RUNNING

# Signal once training is under way (a few steps in metrics.jsonl), well before it could finish.
metrics=$WORK/run/metrics.jsonl
for _ in $(seq 600); do
  [[ -f $metrics ]] && [[ $(metric_steps "$metrics" | tail -n 1) -ge 3 ]] 2>/dev/null && break
  [[ $(job_field "$JOB" JobState) == RUNNING ]] || break
  sleep 0.2
done
at=$(metric_steps "$metrics" 2>/dev/null | tail -n 1 || true)
[[ -n $at && $at -ge 3 ]] || { cat "$JOB_LOG"; fail "training never reached step 3"; }
(( at < STEPS / 2 )) || fail "training is too fast for this test (step $at of $STEPS before the signal); raise KILN_SLURM_REQUEUE_STEPS"
run "${signal[@]}" "$JOB"
echo "(sent at train step $at)"

wait_job "$JOB" 600
show_accounting "$JOB"
echo "----- $JOB_LOG"; cat "$JOB_LOG"; echo "-----"
[[ $STATE == COMPLETED ]] || fail "job $JOB ended $STATE"
[[ $(job_field "$JOB" ExitCode) == 0:0 ]] || fail "job $JOB exit code $(job_field "$JOB" ExitCode)"
[[ $(job_field "$JOB" Restarts) == 1 ]] || fail "job $JOB restarted $(job_field "$JOB" Restarts) times, expected 1"

# The first run: checkpoint, exit 3, requeue. The second: restart 1, resume, exit 0.
grep -q "kiln-slurm: kiln checkpointed on a signal (exit 3); requeueing job $JOB" "$JOB_LOG" || fail "the first run did not end with exit 3 and a requeue"
grep -q "kiln-slurm: requeued;" "$JOB_LOG" || fail "scontrol requeue did not succeed"
grep -q "kiln-slurm: job $JOB (kiln-e2e) restart 1 " "$JOB_LOG" || fail "no restarted run in the log"
grep -q "kiln-slurm: kiln exited with code 0" "$JOB_LOG" || fail "the restarted run did not exit 0"
[[ $(grep -c "kiln-slurm: job $JOB (kiln-e2e) restart" "$JOB_LOG") -eq 2 ]] || fail "expected exactly 2 runs"
check_layout "$JOB_LOG" "$launcher"

# Exactly two checkpoints: the one written on the signal (step k) and the final one.
mapfile -t ckpts < <(cd "$WORK/run/checkpoints" && ls step-*.h5)
echo "checkpoints: ${ckpts[*]}"
[[ ${#ckpts[@]} -eq 2 ]] || fail "expected the signal's and the final checkpoint, found ${ckpts[*]}"
k=$((10#$(sed 's/step-\([0-9]*\)\.h5/\1/' <<<"${ckpts[0]}")))
last=$((10#$(sed 's/step-\([0-9]*\)\.h5/\1/' <<<"${ckpts[1]}")))
[[ $last -eq $STEPS ]] || fail "final checkpoint is step $last, expected $STEPS"
(( k >= at && k < STEPS )) || fail "signal checkpoint at step $k; the signal came at step $at"
# The restarted run said where it resumed: the signal checkpoint's step.
restart_part=$(awk "/kiln-slurm: job $JOB \\(kiln-e2e\\) restart 1 /{on=1} on" "$JOB_LOG")
grep -iE "resum.*step[ -]0*$k([^0-9]|$)" <<<"$restart_part" >/dev/null ||
  fail "the restarted run does not say it resumed from step $k"
echo "ok: resumed at step $k: $(grep -iE "resum.*step" <<<"$restart_part" | head -n 1)"
# And it continued the same sequence: every step once, in order.
steps=$(metric_steps "$metrics" | tr '\n' ' ')
[[ $steps == "$(seq -s ' ' 1 "$STEPS") " ]] || fail "metrics.jsonl train steps are not 1..$STEPS exactly once: $steps"
[[ $(grep -c "JobId=$JOB " "$SLURM_DIR/jobcomp.txt") -eq 2 ]] || fail "jobcomp should record 2 runs of job $JOB"
if [[ $KILN_SLURM_ACCOUNTING == 1 ]]; then
  runs=$(sacct -n -X -j "$JOB" --duplicates -o State | xargs)
  [[ $runs == "REQUEUED COMPLETED" ]] || fail "sacct: the job's runs are '$runs', expected 'REQUEUED COMPLETED'"
  # The first run's kiln step ended with kiln's own exit code 3 (srun: step .0; mpirun: the batch step).
  sacct -n -j "$JOB" --duplicates -o JobID%20,ExitCode | grep -qE "^ *$JOB\.(0|batch) +3:0" ||
    fail "sacct: no step of the first run exited with code 3"
  echo "ok: sacct: runs $runs, the first one's kiln exited 3"
fi
say "PASS: $MODE: SIGUSR1 at step $at -> checkpoint step $k -> requeue -> resumed at $k -> finished at $STEPS"
