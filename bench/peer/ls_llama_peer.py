"""The peer a CPU user would pick instead of kiln: Hugging Face transformers + peft training LS-LLaMA
(LlamaForSequenceClassification: last-token pooling into a bias-free `score` head) with LoRA, in
PyTorch Python. One training step = forward, cross-entropy, backward, clip_grad_norm_(1.0), AdamW,
zero_grad: what `kiln train` does per step for method ls_llama. Random token ids of exactly --seq
tokens (no padding), fixed labels. Prints one line with tokens/s over --steps after --warmup.
  ls_llama_peer.py --model DIR --threads 2 --batch 8 --seq 128 --steps 30
"""
import argparse
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForSequenceClassification


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--r", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification.from_pretrained(args.model, num_labels=2, torch_dtype=torch.float32)
    model.config.pad_token_id = 0  # ids below are >= 3: no position is padding
    cfg = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.0, task_type="SEQ_CLS",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (args.batch, args.seq))
    labels = torch.randint(0, 2, (args.batch,))

    def step():
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    s = time.perf_counter() - t0
    print(f"peer transformers+peft threads={args.threads} batch={args.batch} seq={args.seq} steps={args.steps} "
          f"step_ms={1000 * s / args.steps:.1f} tokens_per_s={args.batch * args.seq * args.steps / s:.0f}")


if __name__ == "__main__":
    main()
