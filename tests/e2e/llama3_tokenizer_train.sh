#!/usr/bin/env bash
# A model whose folder holds only LLaMA-3's tokenizer.json (byte-level BPE, 128,256 ids) trains:
# a 1-layer, 16-wide LLaMA with LLaMA-3's vocabulary and random weights (written here, tied
# embeddings), LS-LLaMA on 256 SST-2 sentences for 4 steps, then kiln eval of its checkpoint.
# Before tokenizer.json support, every command stopped at "tokenizer file not found".
# Needs KILN_BIN, KILN_SHARED_DIR, KILN_SOURCE_DIR (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
model=$work/llama3-tiny
mkdir -p "$model"
cp "$KILN_SHARED_DIR"/models/llama3-tokenizer/{tokenizer.json,tokenizer_config.json} "$model/"
python3 - "$model" <<'PY'
import json, random, struct, sys
d = sys.argv[1]
V, H, I, L, heads, kv = 128256, 16, 32, 1, 2, 1
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V, "hidden_size": H,
       "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": heads, "num_key_value_heads": kv,
       "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu",
       "tie_word_embeddings": True, "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "float32"}
json.dump(cfg, open(d + "/config.json", "w"), indent=2)
hd = H // heads
shapes = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
for l in range(L):
    p = f"model.layers.{l}."
    shapes.update({p + "input_layernorm.weight": [H], p + "post_attention_layernorm.weight": [H],
                   p + "self_attn.q_proj.weight": [H, H], p + "self_attn.k_proj.weight": [kv * hd, H],
                   p + "self_attn.v_proj.weight": [kv * hd, H], p + "self_attn.o_proj.weight": [H, H],
                   p + "mlp.gate_proj.weight": [I, H], p + "mlp.up_proj.weight": [I, H], p + "mlp.down_proj.weight": [H, I]})
rng = random.Random(0)
header, blobs, off = {}, [], 0
for name, shape in shapes.items():
    n = 1
    for s in shape: n *= s
    vals = [1.0] * n if name.endswith("norm.weight") else [rng.gauss(0, 0.02) for _ in range(n)]
    b = struct.pack(f"<{n}f", *vals)
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(d + "/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for b in blobs: f.write(b)
PY
args=(model.path="$model" train.max_steps=4 train.micro_batch=32 train.global_batch=64 data.max_train_examples=256
      data.max_eval_examples=64 checkpoint.run_dir="$work/run")
"$KILN_BIN" train "$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml" "${args[@]}" > "$work/train.log" 2>&1 \
  || { tail -20 "$work/train.log"; fail "training with the LLaMA-3 tokenizer failed"; }
grep -q "step 4/4" "$work/train.log" || fail "no step 4/4 in the log"
"$KILN_BIN" eval "$KILN_SOURCE_DIR/recipes/tiny/sst2.yaml" "${args[@]}" > "$work/eval.json" 2> "$work/eval.log" \
  || { tail "$work/eval.log"; fail "eval failed"; }
grep -q '"accuracy"' "$work/eval.json" || fail "no accuracy"
echo "OK: trained and evaluated a LLaMA-3-vocabulary model: $(grep -o '"accuracy": [0-9.]*' "$work/eval.json")"
