#!/usr/bin/env bash
# `kiln lep bench` end to end on the committed tiny instruct model (models/stories260K-instruct):
# the English table (SST-2 in words, the copy task) from make_instruct.py's records, where the
# model copies (a harness or model that lost the skill fails); Darumeru's PARus with the base
# model; the files of --out; errors (an existing --out, a task whose records file is missing:
# exit 2 naming the table's line). The instruct recipe keeps the base's embeddings (model.freeze).
# The paper pipelines' commands (--dry-run) and their recipes validate. Needs KILN_BIN, KILN_SHARED_DIR, KILN_SOURCE_DIR (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
src=$KILN_SOURCE_DIR
python3 "$src/recipes/lep/tiny/make_instruct.py" "$src/datasets/sst2" "$work" > /dev/null
KILN_LEP_BENCH=$work "$KILN_BIN" lep bench --model "$src/models/stories260K-instruct" --tasks "$src/recipes/lep/bench/english.yaml" \
  --system-prompt Chat. --out "$work/en" > "$work/en.md" 2> "$work/en.log" || { cat "$work/en.log"; fail "english bench"; }
cat "$work/en.md"
python3 - "$work/en" <<'PY' || fail "results"
import json, sys
r = json.load(open(sys.argv[1] + "/results.json"))
copy, sst = r["tasks"]["Copy-EN"], r["tasks"]["SST2-words"]
assert copy["records"] == 200 and sst["records"] == 872, r
assert copy["metrics"]["copy"] >= 0.9, copy            # the instruct model copies
assert 0.9 <= copy["metrics"]["length_ratio"] <= 1.1, copy
assert abs(r["mean_score"] - (copy["score"] + sst["score"]) / 2) < 1e-12
preds = [json.loads(l) for l in open(sys.argv[1] + "/SST2-words.jsonl")]
assert len(preds) == 872 and set(preds[0]["loglikelihood"]) == {"positive", "negative"}
assert all(p["prediction"] == max(p["loglikelihood"], key=p["loglikelihood"].get) for p in preds)
PY
rc=0; KILN_LEP_BENCH=$work "$KILN_BIN" lep bench --model "$src/models/stories260K-instruct" --tasks "$src/recipes/lep/bench/english.yaml" \
  --out "$work/en" > /dev/null 2> "$work/again.log" || rc=$?
[[ $rc == 2 ]] && grep -q "exists" "$work/again.log" || fail "an existing --out: exit $rc"
rc=0; "$KILN_BIN" lep bench --model "$src/models/stories260K" --tasks "$src/recipes/lep/bench/darumeru.yaml" > /dev/null 2> "$work/missing.log" || rc=$?
[[ $rc == 2 ]] && grep -q "darumeru.yaml:[0-9]*: task \`DaruCopy-RU\`: no records file" "$work/missing.log" ||
  { cat "$work/missing.log"; fail "a missing records file: exit $rc"; }
KILN_DARUMERU=$KILN_SHARED_DIR/data/darumeru "$KILN_BIN" lep bench --model "$src/models/stories260K" \
  --tasks "$src/recipes/lep/bench/darumeru.yaml" --task PARus > "$work/parus.md" 2> "$work/parus.log" || { cat "$work/parus.log"; fail "PARus"; }
grep -q "| PARus | 50 |" "$work/parus.md" || fail "PARus table"
# The instruct recipe's frozen embeddings (model.freeze: [embed_tokens], tied to the head): a few
# steps on a small set; the export keeps stories260K's E byte for byte and changes every layer. The
# committed instruct model was trained so: its E is the base's. A name matching no module: exit 2.
mkdir -p "$work/small"
python3 "$src/recipes/lep/tiny/make_instruct.py" "$src/datasets/sst2" "$work/small" --sentiment 64 --copy 16 > /dev/null
inst=(env KILN_LEP_INSTRUCT_DATA="$work/small")
"${inst[@]}" "$KILN_BIN" train "$src/recipes/lep/tiny_instruct.yaml" train.max_steps=4 train.threads=1 train.eval_every=0 \
  checkpoint.run_dir="$work/inst" > "$work/inst.log" 2>&1 || { cat "$work/inst.log"; fail "instruct tuning"; }
"${inst[@]}" "$KILN_BIN" export "$src/recipes/lep/tiny_instruct.yaml" checkpoint.run_dir="$work/inst" --merged \
  --out "$work/inst-merged" > "$work/inst-export.log" 2>&1 || { cat "$work/inst-export.log"; fail "instruct export"; }
python3 - "$src/models/stories260K/model.safetensors" "$work/inst-merged/model.safetensors" \
  "$src/models/stories260K-instruct/model.safetensors" <<'PY' || fail "model.freeze"
import json, struct, sys
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    head.pop("__metadata__", None)
    return {k: raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in head.items()}
base, tuned, committed = (tensors(p) for p in sys.argv[1:])
assert tuned["model.embed_tokens.weight"] == base["model.embed_tokens.weight"]
assert committed["model.embed_tokens.weight"] == base["model.embed_tokens.weight"]
assert "lm_head.weight" not in tuned or tuned["lm_head.weight"] == base["model.embed_tokens.weight"]
for l in range(5):
    assert tuned[f"model.layers.{l}.self_attn.q_proj.weight"] != base[f"model.layers.{l}.self_attn.q_proj.weight"], l
PY
# Exported with more frozen than the run trained: the trained final norm would silently be the base's.
rc=0; "${inst[@]}" "$KILN_BIN" export "$src/recipes/lep/tiny_instruct.yaml" checkpoint.run_dir="$work/inst" 'model.freeze=[embed_tokens, norm]' \
  --merged --out "$work/inst-more" > "$work/inst-more.log" 2>&1 || rc=$?
[[ $rc == 2 && ! -e $work/inst-more ]] && grep -q "holds trained weight \`model.norm.weight\`" "$work/inst-more.log" ||
  { cat "$work/inst-more.log"; fail "an export freezing what the run trained: exit $rc"; }
rc=0; "${inst[@]}" "$KILN_BIN" train "$src/recipes/lep/tiny_instruct.yaml" 'model.freeze=[embedings]' train.max_steps=1 \
  checkpoint.run_dir="$work/inst-bad" > "$work/inst-bad.log" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "model.freeze" "$work/inst-bad.log" || { cat "$work/inst-bad.log"; fail "a bad model.freeze: exit $rc"; }
# The paper pipelines: the commands they would run, and their recipes valid.
env KILN_LEP_BASE=/m/B KILN_LEP_INSTRUCT=/m/I KILN_LEP_CORPUS=/d/c KILN_LEP_HELDOUT=/d/h KILN_LEP_VOCAB_CORPUS=/d/v \
  KILN_LEP_CALIBRATE_DATA=/d/cal bash "$src/recipes/lep/pipeline.sh" mistral-openchat "$work/dry" --dry-run > "$work/dry.txt"
[[ $(grep -c "lep propagate" "$work/dry.txt") == 3 ]] || fail "dry run: no three propagations"
grep -q "paper_calibrate_self.yaml" "$work/dry.txt" && grep -q -- "--chat openchat" "$work/dry.txt" || fail "dry run: calibration or chat"
rc=0; bash "$src/recipes/lep/pipeline.sh" llama3-instruct "$work/dry2" --dry-run > /dev/null 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "a paper profile without its model paths: exit $rc"
for r in paper_embeddings_mistral paper_embeddings_llama3 paper_calibrate_self paper_calibrate_continued tiny_calibrate; do
  KILN_LEP_MODEL=$src/models/stories260K KILN_LEP_TRAIN=x KILN_LEP_EVAL=y KILN_LEP_CALIBRATE_MODEL=$src/models/stories260K \
    KILN_LEP_CALIBRATE_DATA=$work "$KILN_BIN" recipe "$src/recipes/lep/$r.yaml" > /dev/null || fail "recipe $r"
done
echo OK
