#!/usr/bin/env python3
"""kiln's logits against Hugging Face transformers loading a GGUF file (`from_pretrained(dir,
gguf_file=...)`), the reference users have for llama.cpp's format.

Usage: gguf_parity.py --kiln BIN --gguf FILE --folder DIR [--folder DIR ...] --texts FILE
                      [--tol 1e-4] [--chat-prompt TEXT] [--work DIR]
Each line of --texts is a prompt: the first --folder's tokenizer encodes it (`kiln generate
--prompt`), every folder's logits for those ids come from `kiln generate --ids --logits`, and
transformers' from the GGUF file. Prints the largest absolute difference per prompt and folder and
exits 1 where one is above --tol. With --f64-folder DIR (a Hugging Face folder of the same weights),
transformers also runs the model in float64 as a reference, and kiln's float32 logits must be no
farther from it than transformers' float32 logits are (times 1.5): on long prompts both are about
1e-4 away from the exact values, which makes a plain tolerance a test of float32 noise. With --chat-prompt, the first folder answers it greedily
(`kiln generate --chat`) and the answer is printed with transformers' answer to the same ids.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def kiln_logits(kiln, folder, work, prompt=None, ids=None):
    out = os.path.join(work, "logits.json")
    cmd = [kiln, "generate", folder, "--logits", out, "--max-new-tokens", "1", "--print-ids"]
    cmd += ["--prompt", prompt] if prompt is not None else ["--ids", ",".join(map(str, ids))]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        j = json.load(f)
    return j["ids"], np.asarray(j["logits"], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--folder", action="append", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--chat-prompt")
    ap.add_argument("--work")
    ap.add_argument("--f64-folder")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(a.gguf)),
                                                 gguf_file=os.path.basename(a.gguf), dtype=torch.float32)
    model.eval()
    exact = None
    if a.f64_folder:
        exact = AutoModelForCausalLM.from_pretrained(a.f64_folder, dtype=torch.float64).eval()
    failed = []
    texts = [t for t in open(a.texts, encoding="utf-8").read().split("\n") if t.strip()]
    worst = 0.0
    for i, text in enumerate(texts):
        ids, first = kiln_logits(a.kiln, a.folder[0], work, prompt=text)
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].float().numpy()
        diffs = [float(np.abs(first - ref).max())]
        for folder in a.folder[1:]:
            _, other = kiln_logits(a.kiln, folder, work, ids=ids)
            diffs.append(float(np.abs(other - ref).max()))
        worst = max([worst] + diffs)
        print(f"prompt {i}: {len(ids)} tokens, max |kiln - transformers| per folder: "
              + ", ".join(f"{d:.2e}" for d in diffs) + f" (logits up to {np.abs(ref).max():.1f})")
        if exact is not None:
            with torch.no_grad():
                e = exact(torch.tensor([ids])).logits[0].numpy()
            k_err, t_err = float(np.abs(first - e).max()), float(np.abs(ref - e).max())
            print(f"  against float64: kiln {k_err:.2e}, transformers {t_err:.2e}")
        # Over the tolerance only where kiln is also farther from the exact values than transformers.
        if max(diffs) > a.tol and (exact is None or k_err > 1.5 * t_err + 1e-6):
            failed.append(i)
    if a.chat_prompt:
        r = subprocess.run([a.kiln, "generate", a.folder[0], "--chat", "--prompt", a.chat_prompt,
                            "--max-new-tokens", "24"], check=True, capture_output=True, text=True)
        print(f"kiln generate --chat {a.chat_prompt!r}: {r.stdout.strip()!r}")
    print(f"{len(texts)} prompts, {len(a.folder)} folder(s): worst {worst:.2e} (tolerance {a.tol:g})")
    if failed:
        print(f"FAILED: prompts {failed}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
