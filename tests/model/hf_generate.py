"""transformers' greedy generate() on a method lm export gives kiln generate's tokens. For each export
folder (hf_generate.sh): the README's Python block runs as it is (it builds the model and tokenizer,
renders its example prompt in the run's format and generates 64 tokens greedily: `ids`, `new`);
the `kiln generate` command its last comment names, run with --logits to get its prompt ids, must
give the same prompt ids and the same new tokens (kiln leaves the stop token out).
"""
import argparse
import io
import json
import os
import re
import shlex
import subprocess
import sys
from contextlib import redirect_stdout

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("folders", nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(1)
    failures = []
    for folder in args.folders:
        with open(os.path.join(folder, "README.md")) as f:
            text = f.read()
        (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
        ns = {"__name__": "readme"}
        with redirect_stdout(io.StringIO()):
            exec(compile(code, os.path.join(folder, "README.md"), "exec"), ns)
        ids, new = list(ns["ids"]), list(ns["new"])
        stops = json.loads(re.search(r"eos_token_id=(\[[0-9, ]*\])", code).group(1))
        if new and new[-1] in stops:
            new = new[:-1]
        cmd = shlex.split(re.search(r"# The same tokens, stop token left out: (kiln generate .*)$", code, re.M).group(1))
        logits = os.path.join(args.work, "prompt.json")
        out = subprocess.run([args.kiln] + cmd[1:] + ["--max-new-tokens", "64", "--logits", logits],
                             check=True, capture_output=True, text=True).stdout.strip()
        kiln_new = [int(x) for x in out.split(",")] if out else []
        with open(logits) as f:
            kiln_ids = json.load(f)["ids"]
        ok = kiln_ids == ids and kiln_new == new
        print(f"{'ok  ' if ok else 'FAIL'} {folder}: prompt {len(ids)} tokens {'=' if kiln_ids == ids else '!='} kiln's; "
              f"{len(new)} new tokens {'=' if kiln_new == new else '!='} kiln generate's")
        if not ok:
            print(f"     transformers {ids} -> {new}\n     kiln         {kiln_ids} -> {kiln_new}")
            failures.append(folder)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
