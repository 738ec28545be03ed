#!/usr/bin/env bash
# `kiln lep bench` end to end on the committed tiny instruct model (models/stories260K-instruct):
# the English table (SST-2 in words, the copy task) from make_instruct.py's records, where the
# model copies (a harness or model that lost the skill fails); Darumeru's PARus with the base
# model; the files of --out; errors (an existing --out, a task whose records file is missing:
# exit 2 naming the table's line). The paper pipelines' commands (--dry-run) and their recipes
# validate. Needs KILN_BIN, KILN_SHARED_DIR, KILN_SOURCE_DIR (set by ctest).
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
