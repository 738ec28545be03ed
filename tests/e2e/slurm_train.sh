#!/usr/bin/env bash
# The real cluster/single_node.sbatch on a local Slurm: a 2-task job (srun --mpi=pmix) trains the
# tiny recipe to the end. Checks the job's state and exit code, kiln's 2-rank layout in the log,
# the final checkpoint and metrics.jsonl.
source "$(dirname "${BASH_SOURCE[0]}")/slurm_common.sh"
STEPS=${KILN_SLURM_STEPS:-12}

slurm_start slurm-train
submit_kiln single_node.sbatch checkpoint.run_dir="$WORK/run" train.max_steps=$STEPS train.log_every=1
wait_job "$JOB" 600
show_accounting "$JOB"
echo "----- $JOB_LOG"; cat "$JOB_LOG"; echo "-----"
[[ $STATE == COMPLETED ]] || fail "job $JOB ended $STATE"
[[ $(job_field "$JOB" ExitCode) == 0:0 ]] || fail "job $JOB exit code $(job_field "$JOB" ExitCode)"

if [[ $KILN_SLURM_ACCOUNTING == 1 ]]; then
  rec=$(sacct -n -X -j "$JOB" -o State,ExitCode | xargs)
  [[ $rec == "COMPLETED 0:0" ]] || fail "sacct says '$rec', expected 'COMPLETED 0:0'"
fi
grep -q "kiln-slurm: job $JOB (kiln-e2e) restart 0 on 1 node(s) .*, 2 task(s), 1 cpu(s)/task, GPUs 2/node" "$JOB_LOG" ||
  fail "the script's start line is missing or wrong"
grep -q "kiln-slurm: kiln exited with code 0" "$JOB_LOG" || fail "the script did not see kiln exit 0"
check_layout "$JOB_LOG" srun

run ls "$WORK/run" "$WORK/run/checkpoints"
final=$(printf '%s/run/checkpoints/step-%08d.h5' "$WORK" "$STEPS")
[[ -s $final ]] || fail "no final checkpoint $final"
[[ -s $WORK/run/recipe.yaml ]] || fail "no recipe.yaml in the run directory"
grep -qE 'threads: 1($|[^0-9])' "$WORK/run/recipe.yaml" || fail "train.threads=1 (from --cpus-per-task) is not in the saved recipe"
steps=$(metric_steps "$WORK/run/metrics.jsonl" | tr '\n' ' ')
[[ $steps == "$(seq -s ' ' 1 "$STEPS") " ]] || fail "metrics.jsonl train steps are '$steps', expected 1..$STEPS"
echo "ok: checkpoint $(basename "$final"), metrics.jsonl steps 1..$STEPS"
say "PASS: cluster/single_node.sbatch ran a 2-rank kiln job to completion under Slurm"
