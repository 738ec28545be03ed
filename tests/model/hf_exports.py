"""Each ls_llama export, loaded by the Python lines of its own README.md, gives kiln's logits.
Called by hf_exports.sh with run directories, each trained with `kiln train` (its final evaluation
wrote kiln's logits to predictions.tsv) and exported merged to <run>-merged. Per run, for the
adapter (<run>/adapter) and the merged export, each within 1e-4:
  - the README's code block runs as it is and defines `model` and encode() / encode_words();
  - encode_words() gives kiln's token ids (token classification; for sentences the logits tell);
  - the logits on the first 200 dev examples equal predictions.tsv's, fed as kiln's evaluation fed
    them (batches of --eval-batch in order, padded on the right with the pad id the README names,
    attention_mask 1 on tokens) for kiln's own classes; one example at a time for transformers'
    own class (its batches need a pad_token_id the base model lacks);
  - the accuracy from transformers' logits is kiln's.
For the README's main job (seq-mean-causal) it also prints what transformers' own
LlamaForSequenceClassification made of the same adapter before exports carried kiln's class, and
checks that the merged folder refuses to load without trust_remote_code.
"""
import argparse
import csv
import io
import os
import re
import sys
from contextlib import redirect_stdout

import torch

TOL = 1e-4
failures = []


def check(name, diff):
    ok = diff < TOL
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max |kiln - transformers| = {diff:.3g}")
    if not ok:
        failures.append(name)


def readme_code(folder):
    with open(os.path.join(folder, "README.md")) as f:
        text = f.read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, f"{folder}/README.md: {len(blocks)} python blocks"
    pad = re.search(r"padded on the right with id (\d+)", text)
    assert pad, f"{folder}/README.md does not name the pad id"
    return blocks[0], int(pad.group(1))


def run_readme(folder):
    code, pad = readme_code(folder)
    ns = {"__name__": "readme"}
    with redirect_stdout(io.StringIO()):  # the README's example prints a prediction
        exec(compile(code, os.path.join(folder, "README.md"), "exec"), ns)
    return ns, pad


def is_kiln_class(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.startswith("Kiln")


def forward(model, rows, pad, batch, kiln_class):
    """Logits per row (real positions only for token classification), batched as kiln evaluates."""
    out = []
    size = batch if kiln_class else 1
    with torch.no_grad():
        for b in range(0, len(rows), size):
            chunk = rows[b:b + size]
            T = max(len(r) for r in chunk)
            ids = torch.tensor([r + [pad] * (T - len(r)) for r in chunk])
            mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in chunk])
            lg = model(input_ids=ids, attention_mask=mask).logits.double()
            for i, r in enumerate(chunk):
                out.append(lg[i, :len(r)] if lg.dim() == 3 else lg[i])
    return out


def sentences(path, n):
    with open(path) as f:
        return [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][:n]


def conll_sentences(path, n):
    out, cur = [], []
    with open(path) as f:
        for line in f:
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if cur:
                    out.append(cur)
                cur = []
            else:
                cur.append(cols[0])
    if cur:
        out.append(cur)
    return out[:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sst2", required=True)
    ap.add_argument("--conll", required=True)
    ap.add_argument("--eval-batch", type=int, required=True)
    ap.add_argument("--setting", action="append", required=True, help="name=run_dir")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for s in args.setting:
        name, run = s.split("=", 1)
        with open(os.path.join(run, "predictions.tsv")) as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        labels = [k[len("logit_"):] for k in rows[0] if k.startswith("logit_")]
        token = "position" in rows[0]
        if token:
            n = 1 + max(int(r["example"]) for r in rows)
            kiln_ids = [[] for _ in range(n)]
            kiln = [[] for _ in range(n)]
            for r in rows:
                kiln_ids[int(r["example"])].append(int(r["token"]))
                kiln[int(r["example"])].append([float(r["logit_" + l]) for l in labels])
            kiln = [torch.tensor(k, dtype=torch.float64) for k in kiln]
            texts = conll_sentences(args.conll, n)
        else:
            kiln = [torch.tensor([float(r["logit_" + l]) for l in labels], dtype=torch.float64) for r in rows]
            gold = [labels.index(r["gold"]) for r in rows]
            texts = sentences(args.sst2, len(rows))
        assert len(texts) == len(kiln), f"{name}: {len(texts)} texts, {len(kiln)} rows in predictions.tsv"
        for kind, folder in (("adapter", os.path.join(run, "adapter")), ("merged", run + "-merged")):
            ns, pad = run_readme(folder)
            model = ns["model"]
            if token:
                enc = [ns["encode_words"](words) for words in texts]
                ids = [e[0] for e in enc]
                bad = sum(a != b for a, b in zip(ids, kiln_ids))
                if bad:
                    failures.append(f"{name} {kind}: encode_words")
                    print(f"FAIL {name} {kind}: encode_words differs from kiln's ids on {bad} sentences")
            else:
                ids = [ns["encode"](t) for t in texts]
            got = forward(model, ids, pad, args.eval_batch, is_kiln_class(model))
            check(f"{name} {kind} ({type(model).__name__})", max((g - k).abs().max().item() for g, k in zip(got, kiln)))
            if not token:
                acc = sum(int(g.argmax()) == y for g, y in zip(got, gold)) / len(gold)
                kiln_acc = sum(int(k.argmax()) == y for k, y in zip(kiln, gold)) / len(gold)
                print(f"     accuracy on {len(gold)} dev sentences: transformers {acc:.4f}, kiln {kiln_acc:.4f}")
                if acc != kiln_acc:
                    failures.append(f"{name} {kind}: accuracy")
        if name == "seq-mean-causal":
            main_job_checks(run, texts, gold, ns["encode"], labels)
    if failures:
        print("failed:", "; ".join(failures))
        sys.exit(1)


def main_job_checks(run, texts, gold, encode, labels):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, LlamaForSequenceClassification

    code, _ = readme_code(os.path.join(run, "adapter"))
    base = re.search(r'^base = "(.*)"', code, re.M).group(1)
    plain = LlamaForSequenceClassification.from_pretrained(base, num_labels=len(labels))
    plain = PeftModel.from_pretrained(plain, os.path.join(run, "adapter")).eval()
    with torch.no_grad():
        acc = sum(int(plain(input_ids=torch.tensor([encode(t)])).logits[0].argmax()) == y for t, y in zip(texts, gold))
    print(f"     the same adapter on transformers' own LlamaForSequenceClassification (last token): "
          f"accuracy {acc / len(gold):.4f}")
    try:
        AutoModelForSequenceClassification.from_pretrained(run + "-merged")
        failures.append("merged export loaded without trust_remote_code")
        print("FAIL the merged export loaded without trust_remote_code (as transformers' own class)")
    except Exception as e:  # transformers refuses a model_type it does not know without the folder's code
        print(f"ok   without trust_remote_code the merged export is refused: {str(e).splitlines()[0][:100]}")


if __name__ == "__main__":
    main()
