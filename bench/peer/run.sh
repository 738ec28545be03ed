#!/usr/bin/env bash
# kiln's LS-LLaMA LoRA training step against the CPU peer users would pick instead, Hugging Face
# transformers + peft in PyTorch Python (bench/peer/ls_llama_peer.py), in one run: same model, LoRA
# config (r 8, alpha 16, all seven projections), head (last-token pooling, bias-free score), AdamW
# with clipping, batch, sequence length and thread count. Models: the bundled stories260K and a
# random 8-layer, 512-wide LLaMA (32k vocabulary). Rows: 1 thread, 2 threads, and kiln on 2 MPI
# ranks of 1 thread each against the peer on 2 threads (same global batch).
# kiln's figure is `kiln train` itself, timed from its log between step WARMUP and the last step.
#   bash bench/peer/run.sh            (env: PEER_BATCH 8, PEER_SEQ 128, PEER_STEPS 30, PEER_WARMUP 5,
#                                      PEER_MODELS to choose, PEER_WORK to keep the work folder)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
py=$root/.venv/bin/python
kiln=${KILN_BIN:-$root/build/kiln}
"$py" -c "import transformers, peft" || { echo "run.sh: .venv needs transformers and peft (scripts/python-env.sh)" >&2; exit 1; }
[[ -x $kiln ]] || { echo "run.sh: $kiln not built (scripts/build.sh)" >&2; exit 1; }
B=${PEER_BATCH:-8} T=${PEER_SEQ:-128} S=${PEER_STEPS:-30} W=${PEER_WARMUP:-5}
if [[ -n ${PEER_WORK:-} ]]; then  # kept: the runs' logs, data and model, for profiling
  work=$PEER_WORK && mkdir -p "$work"
else
  work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT
fi

# The random model (same weights for both), and texts long enough that every example is cut at T.
"$py" - "$work" "$B" "$T" "$((W + S))" <<'PY'
import csv, os, random, shutil, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM
work, B, T, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  max_position_embeddings=2048, bos_token_id=1, eos_token_id=2)
LlamaForCausalLM(cfg).save_pretrained(os.path.join(work, "random-8x512"), safe_serialization=True)
shutil.copy("models/stories260K/tokenizer.model", os.path.join(work, "random-8x512"))
with open("datasets/sst2/train.tsv") as f:
    sents = [r["sentence"].strip() for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
random.seed(0)
def text():
    s = ""
    while len(s) < 12 * T:  # well past T tokens of either tokenizer
        s += random.choice(sents) + " "
    return s.strip()
for name, n in (("train.tsv", B * steps), ("eval.tsv", 8)):
    with open(os.path.join(work, name), "w") as f:
        f.write("sentence\tlabel\n")
        for i in range(n):
            f.write(f"{text()}\t{i % 2}\n")
PY

kiln_rate() {  # model ranks threads -> tokens/s between step W and step W+S of kiln's log
  local model=$1 ranks=$2 threads=$3 log=$work/kiln-$RANDOM.log
  local ov=(model.path="$model" data.train="$work/train.tsv" data.eval="$work/eval.tsv" data.max_len="$T"
            data.truncation=right task.pooling=last train.micro_batch=$((B / ranks)) train.global_batch="$B"
            train.max_steps=$((W + S)) train.log_every="$W" train.eval_every=0 train.lr=1e-3 train.threads="$threads"
            checkpoint.run_dir="$work/run-$RANDOM" checkpoint.every=100000)
  if (( ranks == 1 )); then
    OMP_NUM_THREADS=$threads "$kiln" train recipes/tiny/sst2.yaml "${ov[@]}" >"$log" 2>&1
  else
    bash launch/local.sh -np "$ranks" "$kiln" train recipes/tiny/sst2.yaml "${ov[@]}" >"$log" 2>&1
  fi
  "$py" - "$log" "$W" "$((W + S))" "$((B * T * S))" <<'PY'
import datetime, re, sys
log, first, last, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ts = {}
for line in open(log):
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) .*\bstep (\d+)/\d+ loss", line)
    if m:
        ts[int(m.group(2))] = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
if first not in ts or last not in ts:
    sys.exit(f"no progress lines for steps {first} and {last} in {log}")
print(f"{tokens / (ts[last] - ts[first]).total_seconds():.0f}")
PY
}
peer_rate() {  # model threads
  OMP_NUM_THREADS=$2 "$py" bench/peer/ls_llama_peer.py --model "$1" --threads "$2" --batch "$B" --seq "$T" \
    --steps "$S" --warmup "$W" 2>/dev/null | sed -n 's/.*tokens_per_s=\([0-9]*\).*/\1/p'
}

echo "# batch $B x $T tokens, $S timed steps after $W; LoRA r 8 on all projections; fp32; tokens/s"
echo "| model | kiln | peer (transformers + peft) | kiln tokens/s | peer tokens/s | kiln / peer |"
echo "|---|---|---|---|---|---|"
for model in ${PEER_MODELS:-models/stories260K $work/random-8x512}; do
  [[ $model == random-8x512 ]] && model=$work/random-8x512
  name=$(basename "$model")
  for row in "1 1 1" "1 2 2" "2 1 2"; do
    read -r ranks threads peer_threads <<<"$row"
    k=$(kiln_rate "$model" "$ranks" "$threads")
    p=$(peer_rate "$model" "$peer_threads")
    printf "| %s | %s rank%s x %s thread%s | %s thread%s | %s | %s | %s |\n" "$name" "$ranks" "$([[ $ranks == 1 ]] || echo s)" \
      "$threads" "$([[ $threads == 1 ]] || echo s)" "$peer_threads" "$([[ $peer_threads == 1 ]] || echo s)" "$k" "$p" \
      "$(awk -v k="$k" -v p="$p" 'BEGIN { printf "%.2fx", k / p }')"
  done
done
