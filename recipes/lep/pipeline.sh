#!/usr/bin/env bash
# LEP end to end (../shared/METHODS.md section 3; docs/lep.md): vocabulary, initialisation,
# embedding-only training, propagation into the instruct model by swap, overlap and conversion,
# held-out bits per character, the benchmark tables, self-calibration of the conversion model.
#
#   bash recipes/lep/pipeline.sh PROFILE WORK_DIR [--dry-run]
#
# PROFILE:
#   tiny              the bundled stories260K as the base, models/stories260K-instruct (kiln's own
#                     instruction tuning of it: recipes/lep/tiny_instruct.yaml) as the instruct
#                     model, Russian from ../shared/data/russian_corpus; minutes on 2 CPU cores.
#   mistral-openchat  the paper's Mistral-7B -> OpenChat-3.5 pipeline (32k Russian BPE, Extended);
#   llama3-instruct   the paper's LLaMA-3-8B -> LLaMA-3-8B-Instruct pipeline (64k Russian BPE,
#                     Extended). Both need KILN_LEP_BASE, KILN_LEP_INSTRUCT (model folders),
#                     KILN_LEP_CORPUS (training text), KILN_LEP_HELDOUT (held-out text),
#                     KILN_LEP_VOCAB_CORPUS (text the vocabulary is trained on) and, for
#                     calibration, KILN_LEP_CALIBRATE_DATA (a folder with train.jsonl and dev.jsonl
#                     conversations); GPUs and a few GPU-days of embedding training.
# Environment: KILN_LEP_SCRIPT (extend with only the new tokens holding a letter of this script: the
# tiny profile's default is cyrillic, because stories260K's 512 pieces cut English so finely that
# the Russian BPE's Latin pieces would re-cut it; the paper profiles add every token, as the paper),
# KILN (the binary; default build/kiln), KILN_SHARED_DIR (default ../shared),
# KILN_MPIRUN (default: mpirun, with --allow-run-as-root as root), KILN_NP (ranks, default 2).
# WORK_DIR must not exist; every step writes its own folder in it and summary.md at the end.
# --dry-run prints the commands instead of running them.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { echo "pipeline.sh: $*" >&2; exit 2; }
[[ $# -ge 2 ]] || die "usage: pipeline.sh tiny|mistral-openchat|llama3-instruct WORK_DIR [--dry-run]"
profile=$1 work=$2 dry=${3:-}
[[ -z $dry || $dry == --dry-run ]] || die "unknown option $dry"
[[ -e $work ]] && die "$work exists (the pipeline never overwrites)"
kiln=${KILN:-$root/build/kiln}
shared=${KILN_SHARED_DIR:-$root/../shared}
np=${KILN_NP:-2}
if [[ -n ${KILN_MPIRUN:-} ]]; then read -r -a mpirun <<< "$KILN_MPIRUN"
elif [[ $(id -u) == 0 ]]; then mpirun=(mpirun --allow-run-as-root)
else mpirun=(mpirun); fi
need() { for v in "$@"; do [[ -n ${!v:-} ]] || die "profile $profile needs $v (see the header of this script)"; done; }

case $profile in
  tiny)
    base=$root/models/stories260K instruct=$root/models/stories260K-instruct
    vocab_size=8000 emb_recipe=$here/tiny_ru_embeddings.yaml cal_recipe=$here/tiny_calibrate.yaml
    chat=llama2c system_prompt=Chat. script=${KILN_LEP_SCRIPT-cyrillic} ;;
  mistral-openchat)
    need KILN_LEP_BASE KILN_LEP_INSTRUCT KILN_LEP_CORPUS KILN_LEP_HELDOUT KILN_LEP_VOCAB_CORPUS
    base=$KILN_LEP_BASE instruct=$KILN_LEP_INSTRUCT vocab_size=32000
    emb_recipe=$here/paper_embeddings_mistral.yaml cal_recipe=$here/paper_calibrate_self.yaml
    chat=openchat system_prompt= script=${KILN_LEP_SCRIPT:-} ;;
  llama3-instruct)
    need KILN_LEP_BASE KILN_LEP_INSTRUCT KILN_LEP_CORPUS KILN_LEP_HELDOUT KILN_LEP_VOCAB_CORPUS
    base=$KILN_LEP_BASE instruct=$KILN_LEP_INSTRUCT vocab_size=64000
    emb_recipe=$here/paper_embeddings_llama3.yaml cal_recipe=$here/paper_calibrate_self.yaml
    chat=llama3 system_prompt= script=${KILN_LEP_SCRIPT:-} ;;
  *) die "unknown profile $profile (tiny, mistral-openchat, llama3-instruct)" ;;
esac

run() {  # run LOG CMD...: the command's output into LOG, shown if it fails
  local log=$1; shift
  if [[ -n $dry ]]; then printf '%q ' "$@"; echo; return 0; fi
  echo "[$(date +%H:%M:%S)] ${*:1:6} ..." >&2
  "$@" > "$log" 2>&1 || { tail -n 30 "$log" >&2; die "failed: $* (log: $log)"; }
}
run_json() {  # run_json OUT.json CMD...: stdout (JSON) into OUT.json, stderr into OUT.log
  local out=$1; shift
  if [[ -n $dry ]]; then printf '%q ' "$@"; echo "> $out"; return 0; fi
  echo "[$(date +%H:%M:%S)] ${*:1:6} ..." >&2
  "$@" > "$out" 2> "${out%.json}.log" || { tail -n 30 "${out%.json}.log" >&2; die "failed: $* (log: ${out%.json}.log)"; }
}
if [[ -z $dry ]]; then mkdir -p "$work"; else work=${work%/}; fi

# 0. Data: the tiny profile holds out the last 10% of Anna Karenina's lines; the vocabulary is
#    trained on the other two Russian files.
ru=$shared/data/russian_corpus
if [[ $profile == tiny ]]; then
  train_txt=$work/data/train.txt heldout=$work/data/heldout.txt vocab_corpus=("$ru/besy_dostoevsky.txt" "$ru/corpus_500.txt")
  if [[ -z $dry ]]; then
    mkdir -p "$work/data"
    n=$(wc -l < "$ru/anna_karenina.txt")
    head -n $((n * 9 / 10)) "$ru/anna_karenina.txt" > "$train_txt"
    tail -n +$((n * 9 / 10 + 1)) "$ru/anna_karenina.txt" > "$heldout"
    python3 "$here/tiny/make_instruct.py" "$root/datasets/sst2" "$work/data" > /dev/null
    python3 "$here/tiny/make_copy.py" "$heldout" "$work/data/copy_ru.jsonl" --records --n 100 > /dev/null
    # Calibration: the instruction mix (a fifth of the instruct set) plus Russian copy from the
    # training text; its dev split the English dev conversations plus held-out Russian copy.
    mkdir -p "$work/calibration"
    head -n 10000 "$work/data/train.jsonl" > "$work/calibration/train.jsonl"
    python3 "$here/tiny/make_copy.py" "$train_txt" "$work/data/copy_ru_train.jsonl" --conversations --n 5000 > /dev/null
    cat "$work/data/copy_ru_train.jsonl" >> "$work/calibration/train.jsonl"
    python3 "$here/tiny/make_copy.py" "$heldout" "$work/data/copy_ru_dev.jsonl" --conversations --n 200 > /dev/null
    cat "$work/data/dev.jsonl" "$work/data/copy_ru_dev.jsonl" > "$work/calibration/dev.jsonl"
  fi
  cal_data=$work/calibration
else
  train_txt=$KILN_LEP_CORPUS heldout=$KILN_LEP_HELDOUT vocab_corpus=("$KILN_LEP_VOCAB_CORPUS")
  cal_data=${KILN_LEP_CALIBRATE_DATA:-}
  [[ -n $dry ]] || { mkdir -p "$work/data"; python3 "$here/tiny/make_copy.py" "$heldout" "$work/data/copy_ru.jsonl" --records --n 500 > /dev/null; }
fi

# 1. Vocabulary: a Russian BPE, then the base's tokenizer extended with it (LEP's Extended; with a
#    script, only the new tokens holding one of its letters, so English keeps the base's cuts).
run "$work/tokenizer.log" "$kiln" tokenizer train --vocab-size "$vocab_size" --out "$work/ru-bpe" "${vocab_corpus[@]}"
script_opt=(); [[ -n $script ]] && script_opt=(--script "$script")
run "$work/extend.log" "$kiln" tokenizer extend "$base" "$work/ru-bpe" --out "$work/tokenizer" "${script_opt[@]}"
# 2. Initialisation.
run "$work/init.log" "$kiln" lep init --model "$base" --tokenizer "$work/tokenizer" --out "$work/init"
# 3. Embedding-only training, then the whole model exported: the donor.
emb_env=(env KILN_LEP_MODEL="$work/init" KILN_LEP_TRAIN="$train_txt" KILN_LEP_EVAL="$heldout")
run "$work/embeddings.log" "${emb_env[@]}" "${mpirun[@]}" -np "$np" "$kiln" train "$emb_recipe" checkpoint.run_dir="$work/embeddings"
run "$work/export.log" "${emb_env[@]}" "$kiln" export "$emb_recipe" checkpoint.run_dir="$work/embeddings" --merged --out "$work/donor"
# 4. Propagation into the instruct model.
for mode in swap overlap conversion; do
  run "$work/propagate-$mode.log" "$kiln" lep propagate --base "$base" --instruct "$instruct" --donor "$work/donor" \
    --mode "$mode" --out "$work/propagated-$mode"
done
# 5. Self-calibration of the conversion model.
if [[ -n $cal_data ]]; then
  cal_env=(env KILN_LEP_CALIBRATE_MODEL="$work/propagated-conversion" KILN_LEP_CALIBRATE_DATA="$cal_data")
  run "$work/calibrate.log" "${cal_env[@]}" "${mpirun[@]}" -np "$np" "$kiln" train "$cal_recipe" checkpoint.run_dir="$work/calibrate"
  run "$work/calibrate-export.log" "${cal_env[@]}" "$kiln" export "$cal_recipe" checkpoint.run_dir="$work/calibrate" --merged --out "$work/calibrated"
fi

# 6. Evaluation: characters per token, held-out bits per character (the embedding recipe's
#    evaluation of each model as it is), and the benchmark tables.
models=(base:"$base" adapted:"$work/donor" instruct:"$instruct")
for mode in swap overlap conversion; do models+=("propagated-$mode:$work/propagated-$mode"); done
[[ -n $cal_data ]] && models+=("calibrated:$work/calibrated")
run_json "$work/stats-base.json" "$kiln" tokenizer stats --json "$base" "$heldout"
run_json "$work/stats-extended.json" "$kiln" tokenizer stats --json "$work/tokenizer" "$heldout"
for m in "${models[@]}"; do
  name=${m%%:*} dir=${m#*:}
  run_json "$work/eval-$name.json" env KILN_LEP_MODEL="$dir" KILN_LEP_TRAIN="$train_txt" KILN_LEP_EVAL="$heldout" \
    "$kiln" eval "$emb_recipe" checkpoint.run_dir="$work/eval/$name" --base
  [[ $name == base || $name == adapted ]] && continue
  sp=(); [[ -n $system_prompt ]] && sp=(--system-prompt "$system_prompt")
  if [[ $profile == tiny ]]; then
    run "$work/bench-en-$name.log" env KILN_LEP_BENCH="$work/data" "$kiln" lep bench --model "$dir" \
      --tasks "$here/bench/english.yaml" --chat "$chat" "${sp[@]}" --out "$work/bench-en-$name"
  fi
  run "$work/bench-ru-$name.log" env KILN_LEP_BENCH="$work/data" "$kiln" lep bench --model "$dir" \
    --tasks "$here/bench/darumeru.yaml" --chat "$chat" "${sp[@]}" --out "$work/bench-ru-$name"
done
[[ -n $dry ]] && exit 0

# 7. The summary.
python3 - "$work" "$profile" "${models[@]}" <<'PY'
import json, os, sys
work, profile, models = sys.argv[1], sys.argv[2], [m.split(":", 1)[0] for m in sys.argv[3:]]
stats = {k: json.load(open(f"{work}/stats-{k}.json"))[0] for k in ("base", "extended")}
out = [f"# LEP pipeline `{profile}`", "",
       f"Held-out text: {stats['base']['characters']} characters.", "",
       "| tokenizer | characters per token |", "|---|---|",
       f"| base | {stats['base']['chars_per_token']:.3f} |", f"| extended | {stats['extended']['chars_per_token']:.3f} |", "",
       "| model | bits per character | bits per byte | perplexity | English | Russian (Darumeru-style) |", "|---|---|---|---|---|---|"]
for m in models:
    ev = json.load(open(f"{work}/eval-{m}.json"))["metrics"]
    def bench(kind):
        p = f"{work}/bench-{kind}-{m}/results.json"
        if not os.path.exists(p):
            return ""
        r = json.load(open(p))
        return ", ".join(f"{t} {v['score']:.3f}" for t, v in r["tasks"].items())
    out.append(f"| {m} | {ev['bits_per_char']:.3f} | {ev['bits_per_byte']:.3f} | {ev['perplexity']:.4g} | {bench('en')} | {bench('ru')} |")
open(f"{work}/summary.md", "w", encoding="utf-8").write("\n".join(out) + "\n")
print("\n".join(out))
PY
