#!/usr/bin/env bash
# The project's real model end to end (scripts/fetch-smollm2.sh fetches and imports it): kiln's
# logits on held-out prompts (SST-2, WikiQA, Russian, digits, ChatML) against transformers loading
# the same GGUF; `kiln generate --chat` answers in the model's chat format; a LoRA run of method lm
# on ChatML conversations exported with `--gguf f32` and read back by transformers gives the merged
# model's logits, and the GGUF carries the run's chat template. Skipped (exit 77) where the model
# or .venv's transformers/gguf are missing. Needs KILN_BIN, KILN_SOURCE_DIR, KILN_SHARED_DIR.
set -euo pipefail
src=$KILN_SOURCE_DIR
py=$src/.venv/bin/python
model=$src/models/smollm2-135m-instruct
gguf=$src/models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
[[ -f $model/model.safetensors && -f $gguf ]] \
  || { echo "SKIP: $model or $gguf missing (bash scripts/fetch-smollm2.sh fetches and imports it)"; exit 77; }
[[ -x $py ]] || { echo "SKIP: $py missing (scripts/install-deps.sh makes it)"; exit 77; }
"$py" -c "import transformers, gguf" 2>/dev/null \
  || { echo "SKIP: transformers or gguf missing from .venv (scripts/python-env.sh installs them)"; exit 77; }
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
data=$KILN_SHARED_DIR/data
{
  sed -n 2,3p "$data/sst2/dev.tsv" | cut -f1
  sed -n 4p "$data/wikiqa/dev.tsv" | cut -f1,2 --output-delimiter=' '
  awk 'length > 200 { print substr($0, 1, 300); if (++n == 2) exit }' "$data/russian_corpus/anna_karenina.txt"
  echo "In 2024, 1,250 runners ran 42.195 km; ½ of them finished in under 4:30."
  printf '%s\n' '<|im_start|>user' | tr -d '\n'; echo "Name a color.<|im_end|><|im_start|>assistant"
} >"$w/texts.txt"
# Over 1e-4 (float32 noise on long prompts) only where kiln is also farther than transformers from
# the float64 values.
"$py" "$src/tests/model/gguf_parity.py" --kiln "$KILN_BIN" --gguf "$gguf" --folder "$model" --texts "$w/texts.txt" \
  --tol 1e-4 --f64-folder "$model" --work "$w" --chat-prompt "What is the capital of France?" | tee "$w/parity.log"
grep -q "kiln generate --chat .*Paris" "$w/parity.log" || { echo "FAILED: the chat answer does not name Paris"; exit 1; }

# A short LoRA run on ChatML conversations, exported as GGUF and read back by transformers.
"$py" - "$w/chat.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(64):
        a, b = i % 9 + 1, i // 9 + 2
        f.write(json.dumps({"conversations": [{"from": "human", "value": f"What is {a} plus {b}?"},
                                              {"from": "gpt", "value": f"{a} plus {b} is {a + b}."}]}) + "\n")
PY
cat >"$w/lm.yaml" <<YAML
name: smol-gguf-export
method: lm
model: {path: $model}
lora: {r: 4, alpha: 8, target_modules: [q_proj, v_proj]}
data: {format: conversation, train: $w/chat.jsonl, max_len: 64, store_dir: $w/store}
task: {chat: chatml, system_prompt: "You are a helpful AI assistant named SmolLM, trained by Hugging Face"}
train: {micro_batch: 4, max_steps: 3, lr: 1e-3, log_every: 1, eval_every: 0}
checkpoint: {run_dir: $w/run}
YAML
run() { "$@" >"$w/log" 2>&1 || { cat "$w/log"; echo "FAILED: $*"; exit 1; }; }
export OMP_NUM_THREADS=2
run "$KILN_BIN" train "$w/lm.yaml"
run "$KILN_BIN" export "$w/lm.yaml" --merged --out "$w/merged"
run "$KILN_BIN" export "$w/lm.yaml" --gguf f32 --out "$w/g32"
"$py" - "$w/g32/model-f32.gguf" "$w/merged" <<'PY'
import json, sys
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
f = r.fields
template = bytes(f["tokenizer.chat_template"].parts[-1]).decode()
assert template == json.load(open(sys.argv[2] + "/tokenizer_config.json"))["chat_template"], "chat template differs"
assert "<|im_start|>" in template, template
pre = bytes(f["tokenizer.ggml.pre"].parts[-1]).decode()
assert pre == "smollm", pre
print(f"GGUF export: {len(r.tensors)} tensors, pre {pre}, chat template {len(template)} chars")
PY
# The same float64 rule as above: after training, the 235-token prompt measured 1.56e-4 between
# kiln and transformers, float32 noise of both (the imported model's own is 1.16e-4 there).
"$py" "$src/tests/model/gguf_parity.py" --kiln "$KILN_BIN" --gguf "$w/g32/model-f32.gguf" --folder "$w/merged" \
  --texts "$w/texts.txt" --tol 1e-4 --f64-folder "$w/merged" --work "$w"
echo "PASS"
