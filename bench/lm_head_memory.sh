#!/usr/bin/env bash
# Peak memory of a causal-LM training step with LLaMA-3's 128,256-token vocabulary, with the LM
# loss computed from the whole batch's logits (train.lm_head_chunk=0, kiln before issue 29) and in
# chunks (auto), and the two runs' losses and gradient norms step by step. A random 2-layer,
# width-512 LLaMA (untied head) with LLaMA-3's tokenizer, method lm on Russian text, LoRA on q/v,
# batch 4 x 1,024, 3 steps, 1 rank, float32 on CPU. Figures go to docs/model.md; never asserted.
#   bash bench/lm_head_memory.sh [build/kiln]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kiln=${1:-$root/build/kiln}
shared=${KILN_SHARED_DIR:-$root/../shared}
py=$root/.venv/bin/python
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$py" - "$work/model" <<'PY'
import sys, torch, transformers
cfg = transformers.LlamaConfig(vocab_size=128256, hidden_size=512, intermediate_size=1376, num_hidden_layers=2,
                               num_attention_heads=8, num_key_value_heads=8, rms_norm_eps=1e-5, rope_theta=500000.0,
                               tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001)
torch.manual_seed(0)
transformers.LlamaForCausalLM(cfg).save_pretrained(sys.argv[1], safe_serialization=True)
PY
cp "$shared/models/llama3-tokenizer/tokenizer.json" "$shared/models/llama3-tokenizer/tokenizer_config.json" "$work/model/"
cat > "$work/recipe.yaml" <<YAML
name: lm-head-memory
method: lm
model: {path: $work/model}
lora: {r: 8, alpha: 16, target_modules: [q_proj, v_proj]}
data: {format: text, train: $shared/data/russian_corpus/anna_karenina.txt, max_len: 1024, store_dir: $work/store}
train: {micro_batch: 4, global_batch: 4, max_steps: 3, lr: 1e-4, log_every: 1, threads: 2, memory_check: off}
checkpoint: {every: 0, export_adapter: false}
log: {tensorboard: false}
YAML
"$kiln" preprocess "$work/recipe.yaml" > "$work/pre.log" 2>&1 || { cat "$work/pre.log"; exit 1; }
for chunk in ${KILN_BENCH_CHUNKS:-0 auto}; do
  /usr/bin/time -v "$kiln" train "$work/recipe.yaml" train.lm_head_chunk=$chunk checkpoint.run_dir="$work/run-$chunk" \
    > "$work/$chunk.log" 2>&1 || { cat "$work/$chunk.log"; exit 1; }
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/$chunk.log")
  secs=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/$chunk.log")
  echo "lm_head_chunk=$chunk: peak RSS $((rss / 1024)) MiB, wall $secs"
  "$py" - "$work/run-$chunk/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("split") == "train":
        print(f"  step {d['step']}: loss {d['loss']:.9g} grad_norm {d['grad_norm']:.9g} tokens {int(d['tokens'])}")
PY
done
