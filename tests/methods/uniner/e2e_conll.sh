#!/usr/bin/env bash
# UniversalNER end to end on the tiny CoNLL-2003 recipe, kept short (real data, the bundled model):
#   - 2 ranks build the conversation stores, train, evaluate by generation and write results.md
#     with the per-dataset and per-type tables and predictions.jsonl (one line per question);
#   - `kiln eval` of that checkpoint on 1 rank gives the same F1 and generates the same number of
#     tokens (greedy decoding of each question does not depend on how questions fall on ranks);
#   - zero-shot on two CrossNER domains at once (task.sources, evaluation only) with --out: one row
#     per dataset, nothing written into the run directory's results;
#   - the memory plan is printed, and a run that cannot fit is refused (exit 2) before anything is
#     written.
# Needs KILN_BIN, KILN_SOURCE_DIR, KILN_SHARED_DIR, KILN_MPIRUN (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
work=$(mktemp -d); trap '[[ -n ${KEEP:-} ]] || rm -rf "$work"' EXIT
recipe=$KILN_SOURCE_DIR/recipes/uniner/tiny_conll2003.yaml
short=(train.max_steps=40 train.threads=1 data.max_train_examples=1280 data.max_eval_examples=160
       data.store_dir="$work/store" checkpoint.run_dir="$work/run")
f1() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d=d.get('eval', d.get('metrics')); print(repr(d['f1']), int(d['generated_tokens']))" "$1"; }

$KILN_MPIRUN -np 2 "$KILN_BIN" train "$recipe" "${short[@]}" > "$work/np2.log" 2>&1 || { cat "$work/np2.log"; fail "2-rank training"; }
grep -q "memory plan per rank (2 ranks" "$work/np2.log" || fail "no memory plan"
grep -q "^| conll2003 | person | " "$work/run/results.md" || fail "results.md has no per-type row"
grep -q "^| conll2003 | [0-9.]* | " "$work/run/results.md" || fail "results.md has no per-dataset row"
[[ $(wc -l < "$work/run/predictions.jsonl") == 160 ]] || fail "predictions.jsonl does not hold 160 questions"
two=$(f1 "$work/run/results.json"); echo "2 ranks: f1 and generated tokens $two"

"$KILN_BIN" eval "$recipe" "${short[@]}" > "$work/eval.json" 2> "$work/eval.log" || { cat "$work/eval.log"; fail "kiln eval"; }
one=$(f1 "$work/eval.json"); echo "1 rank:  $one"
[[ $one == "$two" ]] || fail "1 rank evaluates to $one, 2 ranks to $two"

before=$(ls "$work/run")
# The first 12 sentences of two CrossNER domains (word<TAB>tag, blank line between sentences).
for d in ai music; do awk -v n=12 '/^$/{if(++k>=n)exit} {print}' "$KILN_SHARED_DIR/data/crossner/$d/dev.txt" > "$work/$d.txt"; done
"$KILN_BIN" eval "$recipe" "${short[@]}" data.train= data.eval= \
  "task.sources=[{name: conll2003, train: $KILN_SOURCE_DIR/datasets/conll2003/eng.train},
                 {name: crossner_ai, eval: $work/ai.txt}, {name: crossner_music, eval: $work/music.txt}]" \
  data.max_eval_examples=0 data.store_dir="$work/zs_store" --out "$work/zeroshot" > "$work/zs.json" 2> "$work/zs.log" || { cat "$work/zs.log"; fail "zero-shot eval"; }
grep -q "^| crossner_ai | [0-9.]* | " "$work/zeroshot/results.md" || fail "no crossner_ai row"
grep -q "^| crossner_music | [0-9.]* | " "$work/zeroshot/results.md" || fail "no crossner_music row"
grep -q "^| crossner_ai | [a-z]" "$work/zeroshot/results.md" || fail "no per-type row for crossner_ai"
grep -q "^| crossner_ai | miscellaneous | " "$work/zeroshot/results.md" && fail "task.types named a tag crossner_ai does not have"
[[ -s $work/zeroshot/predictions.jsonl ]] || fail "no zero-shot predictions"
[[ $(ls "$work/run") == "$before" ]] || fail "kiln eval --out wrote into the run directory"
"$KILN_BIN" eval "$recipe" "${short[@]}" --out "$work/zeroshot" > /dev/null 2> "$work/again.log" && fail "--out overwrote results"
grep -q "already holds results.md" "$work/again.log" || fail "--out into a used directory: $(cat "$work/again.log")"

code=0
"$KILN_BIN" train "$recipe" train.micro_batch=100000 checkpoint.run_dir="$work/huge" > "$work/huge.log" 2>&1 || code=$?
[[ $code == 2 ]] || fail "a run that cannot fit exited $code"
grep -q "needs about .* GiB per rank and host memory" "$work/huge.log" || fail "refusal message: $(tail -1 "$work/huge.log")"
[[ ! -e $work/huge ]] || fail "the refused run wrote $work/huge"
echo "OK"
