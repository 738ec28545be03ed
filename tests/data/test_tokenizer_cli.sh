#!/usr/bin/env bash
# `kiln tokenizer train` and `stats`: a Russian BPE vocabulary trained here (byte fallback, split
# digits), LLaMA-2's tokenizer.model and LLaMA-3's tokenizer.json: on 1 and 2 ranks, with --lines,
# stats counts as many tokens as the reference libraries give for the same lines (`sentencepiece`,
# `tokenizers`, from the project's .venv; skipped without it), and its JSON holds consistent ratios. Needs KILN_BIN, KILN_SHARED_DIR, KILN_SOURCE_DIR, KILN_MPIRUN (set by ctest).
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
py=$KILN_SOURCE_DIR/.venv/bin/python
[[ -x $py ]] || { echo "SKIP: $py missing (scripts/install-deps.sh makes it)"; exit 77; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
head -c 300000 "$KILN_SHARED_DIR/data/russian_corpus/corpus_500.txt" | iconv -c -f utf-8 -t utf-8 > "$work/corpus.txt"
head -c 400000 "$KILN_SHARED_DIR/data/russian_corpus/besy_dostoevsky.txt" | iconv -c -f utf-8 -t utf-8 > "$work/train.txt"
"$KILN_BIN" tokenizer train --vocab-size 2000 --out "$work/ru" "$work/train.txt" > "$work/train.log" 2>&1 || { cat "$work/train.log"; fail "train failed"; }
[[ -f $work/ru/tokenizer.model && -f $work/ru/tokenizer_config.json ]] || fail "train did not write the tokenizer files"
rc=0; "$KILN_BIN" tokenizer train --vocab-size 2000 --out "$work/ru" "$work/train.txt" > /dev/null 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "train into an existing folder: exit $rc, expected 2"
"$py" - "$work/ru/tokenizer.model" <<'PY' || fail "the trained model lacks byte fallback or split digits"
import sys, sentencepiece
sp = sentencepiece.SentencePieceProcessor(model_file=sys.argv[1])
assert sp.get_piece_size() == 2000
assert [sp.id_to_piece(i) for i in sp.encode("12345")][-5:] == list("12345"), sp.encode("12345", out_type=str)
assert "<0xF0>" in sp.encode("😀", out_type=str), sp.encode("😀", out_type=str)
PY
for path in "$work/ru/tokenizer.model" "$KILN_SHARED_DIR/models/llama2-tokenizer/tokenizer.model" "$KILN_SHARED_DIR/models/llama3-tokenizer"; do
  tok=$(basename "$(dirname "$path")")/$(basename "$path")
  want=$("$py" - "$path" "$work/corpus.txt" <<'PY'
import sys
path, corpus = sys.argv[1], sys.argv[2]
lines = open(corpus, encoding="utf-8").read().split("\n")
if path.endswith(".model"):
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
    print(sum(len(sp.encode(l)) for l in lines))
else:
    import tokenizers
    t = tokenizers.Tokenizer.from_file(path + "/tokenizer.json")
    print(sum(len(t.encode(l, add_special_tokens=False).ids) for l in lines))
PY
)
  for np in 1 2; do
    if [[ $np == 1 ]]; then
      "$KILN_BIN" tokenizer stats --lines --json "$path" "$work/corpus.txt" > "$work/out.json"
    else
      $KILN_MPIRUN -np 2 "$KILN_BIN" tokenizer stats --lines --json "$path" "$work/corpus.txt" > "$work/out.json"
    fi
    got=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))[0]; assert abs(j["chars_per_token"]*j["tokens"]-j["characters"])<1e-6*j["characters"]; print(j["tokens"])' "$work/out.json")
    [[ $got == "$want" ]] || fail "$tok on $np rank(s): $got tokens, the reference $want"
    echo "OK $tok, $np rank(s): $got tokens, as the reference"
  done
done
