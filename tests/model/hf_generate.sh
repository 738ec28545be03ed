#!/usr/bin/env bash
# Method lm's exports against transformers' greedy generate(): short LoRA runs on the bundled model,
# on conversations in two formats (fastchat, kiln lm's default; llama2c, whose turn ends with BOS)
# and on plain text, each exported merged, and a short UniNER run; for each merged folder and adapter,
# the Python lines of the export's README.md prompt the model and generate greedily, and the
# `kiln generate` command the README names must give the same prompt ids and the same new tokens
# (hf_generate.py). Skipped (exit 77) where .venv lacks transformers or peft.
# Needs KILN_BIN, KILN_SOURCE_DIR (set by ctest).
set -euo pipefail
py=$KILN_SOURCE_DIR/.venv/bin/python
[[ -x $py ]] || { echo "SKIP: $py missing (scripts/install-deps.sh makes it)"; exit 77; }
"$py" -c "import transformers, peft" 2>/dev/null \
  || { echo "SKIP: transformers or peft missing from .venv (scripts/python-env.sh installs them)"; exit 77; }
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
src=$KILN_SOURCE_DIR
export OMP_NUM_THREADS=1
mkdir -p "$w/instruct"
"$py" "$src/recipes/lep/tiny/make_instruct.py" "$src/datasets/sst2" "$w/instruct" --sentiment 400 --copy 200 >/dev/null
sed -n 2,2001p "$src/datasets/sst2/train.tsv" | cut -f1 >"$w/train.txt"
args=()
for name in fastchat llama2c text; do
  if [[ $name == text ]]; then
    data="{format: text, train: $w/train.txt, max_len: 64}"
    task="{}"
  else
    data="{format: conversation, train: $w/instruct/train.jsonl, eval: $w/instruct/dev.jsonl, max_len: 128, max_eval_examples: 16}"
    task=$([[ $name == fastchat ]] && echo "{}" || echo "{chat: llama2c, system_prompt: Chat.}")
  fi
  cat >"$w/$name.yaml" <<YAML
name: generate-$name
method: lm
model: {path: $src/models/stories260K}
lora: {r: 8, alpha: 16, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}
data: $data
task: $task
train: {micro_batch: 8, max_steps: 40, lr: 3e-3, threads: 1, log_every: 10}
checkpoint: {run_dir: $w/$name, every: 0}
YAML
  "$KILN_BIN" train "$w/$name.yaml" >"$w/$name.log" 2>&1 || { cat "$w/$name.log"; exit 1; }
  "$KILN_BIN" export "$w/$name.yaml" --merged --out "$w/$name-merged" >"$w/$name-export.log" 2>&1 \
    || { cat "$w/$name-export.log"; exit 1; }
  args+=("$w/$name/adapter" "$w/$name-merged")
done
# UniNER (an lm whose conversations are FastChat's with its own system prompt), full fine-tuning:
# the merged folder only.
uniner=(train.max_steps=20 train.threads=1 data.max_train_examples=200 data.max_eval_examples=4 checkpoint.every=0
        checkpoint.run_dir="$w/uniner" data.store_dir="$w/uniner-store")
"$KILN_BIN" train "$src/recipes/uniner/tiny_conll2003.yaml" "${uniner[@]}" >"$w/uniner.log" 2>&1 || { cat "$w/uniner.log"; exit 1; }
"$KILN_BIN" export "$src/recipes/uniner/tiny_conll2003.yaml" "${uniner[@]}" --merged --out "$w/uniner-merged" \
  >"$w/uniner-export.log" 2>&1 || { cat "$w/uniner-export.log"; exit 1; }
args+=("$w/uniner-merged")
"$py" "$src/tests/model/hf_generate.py" --kiln "$KILN_BIN" --work "$w" "${args[@]}"
