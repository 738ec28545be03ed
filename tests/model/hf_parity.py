"""kiln against the tools users already run: Hugging Face transformers + peft, and TensorBoard's own
event reader. Called by hf_parity.sh after it has trained a tiny LS-LLaMA run with kiln, evaluated it
(predictions.tsv with the head's logits) and exported it merged. Checks, each within 1e-4:
  1. peft loads kiln's SEQ_CLS adapter onto LlamaForSequenceClassification: kiln's class logits;
  2. transformers loads kiln's merged export (LlamaForSequenceClassification): the same logits;
  3. peft's LoRA from kiln's adapter on LlamaForCausalLM: the logits of `kiln generate --adapter`;
  4. kiln loads an adapter peft wrote (random A and B): peft's logits;
  5. TensorBoard's EventAccumulator reads kiln's events: every scalar of metrics.jsonl, same values.
"""
import argparse
import csv
import json
import os
import subprocess
import sys

import sentencepiece as spm
import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from tensorboard.backend.event_processing import event_accumulator
from transformers import LlamaForCausalLM, LlamaForSequenceClassification

TOL = 1e-4
failures = []


def check(name, diff):
    ok = diff < TOL
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max |kiln - reference| = {diff:.3g}")
    if not ok:
        failures.append(name)


def main():
    ap = argparse.ArgumentParser()
    for a in ("base", "run", "eval", "merged", "dev", "kiln", "work"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--examples", type=int, default=200)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.base, "tokenizer.model"))

    # kiln's logits per dev example (store order = file order).
    with open(os.path.join(args.eval, "predictions.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    labels = [k[len("logit_"):] for k in rows[0] if k.startswith("logit_")]
    kiln_logits = {int(r["example"]): [float(r["logit_" + l]) for l in labels] for r in rows}
    with open(args.dev) as f:
        sentences = [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert len(sentences) == len(kiln_logits), f"{len(sentences)} dev sentences, {len(kiln_logits)} predictions"

    def ids_of(text):
        # As kiln's readers: the field without surrounding whitespace, BOS first, cut at max_len.
        return ([sp.bos_id()] + sp.encode(text.strip()))[: args.max_len]

    def class_diff(model):
        worst = 0.0
        with torch.no_grad():
            for i in range(min(args.examples, len(sentences))):
                out = model(input_ids=torch.tensor([ids_of(sentences[i])])).logits[0]
                worst = max(worst, (out.double() - torch.tensor(kiln_logits[i], dtype=torch.float64)).abs().max().item())
        return worst

    # 1. kiln's adapter through peft.
    base = LlamaForSequenceClassification.from_pretrained(args.base, num_labels=len(labels))
    peft_cls = PeftModel.from_pretrained(base, os.path.join(args.run, "adapter")).eval()
    check("peft + kiln's SEQ_CLS adapter: class logits", class_diff(peft_cls))

    # 2. kiln's merged export through transformers.
    merged = LlamaForSequenceClassification.from_pretrained(args.merged).eval()
    check("transformers + kiln's merged export: class logits", class_diff(merged))

    prompt = ids_of("Once upon a time, there was a little girl named Lily. She loved to play outside.")

    def kiln_lm_logits(adapter):
        out = os.path.join(args.work, "logits.json")
        subprocess.run([args.kiln, "generate", args.base, "--ids", ",".join(map(str, prompt)), "--max-new-tokens", "1",
                        "--adapter", adapter, "--logits", out], check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return torch.tensor(json.load(f)["logits"], dtype=torch.float64)

    # 3. kiln's LoRA weights (A and B under peft's names) on the causal LM.
    cfg = LoraConfig.from_pretrained(os.path.join(args.run, "adapter"))
    cfg.task_type, cfg.modules_to_save = "CAUSAL_LM", None
    lm = get_peft_model(LlamaForCausalLM.from_pretrained(args.base), cfg)
    state = load_file(os.path.join(args.run, "adapter", "adapter_model.safetensors"))
    lora_state = {k: v for k, v in state.items() if ".lora_" in k}
    assert lora_state, "kiln's adapter holds no lora_A/lora_B tensors"
    res = set_peft_model_state_dict(lm, lora_state)
    missing = [k for k in res.missing_keys if ".lora_" in k]
    assert not missing, f"peft found no value for {missing[:3]}"
    lm.eval()
    with torch.no_grad():
        ref = lm(input_ids=torch.tensor([prompt])).logits[0].double()
        plain = LlamaForCausalLM.from_pretrained(args.base)(input_ids=torch.tensor([prompt])).logits[0].double()
    assert (ref - plain).abs().max().item() > 1e-3, "kiln's trained adapter does not change the logits"
    check("peft + kiln's LoRA weights on LlamaForCausalLM: LM logits", (kiln_lm_logits(os.path.join(args.run, "adapter")) - ref).abs().max().item())

    # 4. An adapter peft wrote, random A and B (init_lora_weights=False), read by kiln.
    pcfg = LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", init_lora_weights=False,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    pm = get_peft_model(LlamaForCausalLM.from_pretrained(args.base), pcfg).eval()
    peft_dir = os.path.join(args.work, "peft-adapter")
    pm.save_pretrained(peft_dir)
    with torch.no_grad():
        ref = pm(input_ids=torch.tensor([prompt])).logits[0].double()
    assert (ref - plain).abs().max().item() > 1e-2, "peft's random adapter does not change the logits"
    check("kiln + peft's adapter: LM logits", (kiln_lm_logits(peft_dir) - ref).abs().max().item())

    # 5. TensorBoard's reader on kiln's events.
    ea = event_accumulator.EventAccumulator(os.path.join(args.run, "tb"), size_guidance={event_accumulator.SCALARS: 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    want, worst, missing = 0, 0.0, []
    with open(os.path.join(args.run, "metrics.jsonl")) as f:
        for line in f:
            j = json.loads(line)
            split, step = j.pop("split"), j.pop("step")
            for k, v in j.items():
                if v is None:
                    continue
                want += 1
                tag = f"{split}/{k}"
                if tag not in tags:
                    missing.append(tag)
                    continue
                got = [e.value for e in ea.Scalars(tag) if e.step == step]
                if not got:
                    missing.append(f"{tag}@{step}")
                    continue
                worst = max(worst, abs(got[-1] - v) / max(1.0, abs(v)))  # float32 in the event file
    print(f"TensorBoard: {want} scalars in metrics.jsonl, {len(tags)} tags in the events, missing {missing[:5]}")
    if missing or want == 0:
        failures.append("TensorBoard scalars")
    check("TensorBoard: scalar values (relative, float32 events)", worst)

    if failures:
        print("failed:", "; ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
