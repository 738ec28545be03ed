#!/usr/bin/env bash
# `kiln tokenizer train`, `extend`, `shrink` and `stats`: a Russian BPE vocabulary trained here (byte
# fallback, split digits), LLaMA-2's tokenizer.model and LLaMA-3's tokenizer.json, both extended with
# the Russian one (old ids kept, in the reference libraries too), LLaMA-3 shrunk and shrunk then
# extended (loaded and round-tripping in the reference), extension with only Cyrillic tokens (English
# cut as before): on 1 and 2 ranks, with --lines,
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
# extend: LLaMA-2 (SentencePiece) and LLaMA-3 (byte-level BPE) plus the Russian vocabulary; every old
# id keeps its token in the reference libraries too, and the new tokens are used.
for base in llama2-tokenizer llama3-tokenizer mistral-tokenizer; do
  "$KILN_BIN" tokenizer extend "$KILN_SHARED_DIR/models/$base" "$work/ru" --out "$work/ext-$base" > "$work/ext.log" 2>&1 \
    || { cat "$work/ext.log"; fail "extend $base failed"; }
  grep -o "+ [0-9]* new tokens.*" "$work/ext.log"
done
"$py" - "$KILN_SHARED_DIR/models" "$work" <<'PY' || fail "extend changed old ids or added nothing"
import sys, sentencepiece, tokenizers
models, work = sys.argv[1], sys.argv[2]
old = sentencepiece.SentencePieceProcessor(model_file=models + "/llama2-tokenizer/tokenizer.model")
new = sentencepiece.SentencePieceProcessor(model_file=work + "/ext-llama2-tokenizer/tokenizer.model")
assert new.get_piece_size() > old.get_piece_size()
assert all(old.id_to_piece(i) == new.id_to_piece(i) for i in range(old.get_piece_size()))
text = open(work + "/corpus.txt", encoding="utf-8").read()[:20000]
assert max(new.encode(text)) >= old.get_piece_size(), "no new piece used"
old = tokenizers.Tokenizer.from_file(models + "/llama3-tokenizer/tokenizer.json")
new = tokenizers.Tokenizer.from_file(work + "/ext-llama3-tokenizer/tokenizer.json")
ov, nv = old.get_vocab(with_added_tokens=True), new.get_vocab(with_added_tokens=True)
assert len(nv) > len(ov) and all(nv[t] == i for t, i in ov.items())
assert max(new.encode(text, add_special_tokens=False).ids) >= len(ov), "no new token used"
PY
# extend --script cyrillic: only new tokens with a Cyrillic letter; English, digits and punctuation
# keep the base's cuts exactly (stories260K's 512 pieces, and LLaMA-3's byte-level BPE), Russian
# uses the new tokens. An unknown script: exit 2 naming it.
for base in "$KILN_SOURCE_DIR/models/stories260K" "$KILN_SHARED_DIR/models/llama3-tokenizer"; do
  name=$(basename "$base")
  "$KILN_BIN" tokenizer extend "$base" "$work/ru" --script cyrillic --out "$work/cyr-$name" > "$work/cyr.log" 2>&1 \
    || { cat "$work/cyr.log"; fail "extend --script $name failed"; }
  grep -q "without a cyrillic letter left out" "$work/cyr.log" || { cat "$work/cyr.log"; fail "no filter count"; }
done
"$py" - "$KILN_SOURCE_DIR/models/stories260K" "$KILN_SHARED_DIR/models/llama3-tokenizer" "$work" <<'PY' || fail "extend --script"
import re, sys, sentencepiece, tokenizers
stories, llama3, work = sys.argv[1:4]
english = [l.split("\t")[0] for l in open(stories + "/../../datasets/sst2/dev.tsv", encoding="utf-8")][1:300]
english += ["Call 555-0199, or e-mail me: x@y.org!", "«Quoted» — dashes… and 1,234.56"]
russian = open(work + "/corpus.txt", encoding="utf-8").read()[:20000]
old = sentencepiece.SentencePieceProcessor(model_file=stories + "/tokenizer.model")
new = sentencepiece.SentencePieceProcessor(model_file=work + "/cyr-stories260K/tokenizer.model")
assert [old.encode(t) for t in english] == [new.encode(t) for t in english]
added = [new.id_to_piece(i) for i in range(old.get_piece_size(), new.get_piece_size())]
assert added and all(re.search("[\u0400-\u04FF]", p) for p in added), [p for p in added if not re.search("[\u0400-\u04FF]", p)][:5]
assert max(new.encode(russian)) >= old.get_piece_size()
old = tokenizers.Tokenizer.from_file(llama3 + "/tokenizer.json")
new = tokenizers.Tokenizer.from_file(work + "/cyr-llama3-tokenizer/tokenizer.json")
assert [old.encode(t, add_special_tokens=False).ids for t in english] == [new.encode(t, add_special_tokens=False).ids for t in english]
assert max(new.encode(russian, add_special_tokens=False).ids) >= old.get_vocab_size(with_added_tokens=True)
print(f"--script cyrillic: {len(added)} tokens added to stories260K; {len(english)} English lines cut as before")
PY
rc=0; "$KILN_BIN" tokenizer extend "$KILN_SHARED_DIR/models/llama2-tokenizer" "$work/ru" --script klingon --out "$work/x" > "$work/x.log" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "script klingon: unknown" "$work/x.log" && [[ ! -e $work/x ]] || { cat "$work/x.log"; fail "unknown script: exit $rc"; }
# tokenizer.json beside every tokenizer.model kiln writes (a trained BPE and unigram, LLaMA-2
# extended): Hugging Face `tokenizers` gives sentencepiece's ids and text on Russian, English,
# code, emoji and whitespace-heavy text, and so does `transformers` loading the folder.
"$KILN_BIN" tokenizer train --type unigram --vocab-size 2000 --out "$work/ru-unigram" "$work/train.txt" > "$work/train.log" 2>&1 \
  || { cat "$work/train.log"; fail "unigram train failed"; }
"$py" - "$work" "$KILN_SHARED_DIR/data/russian_corpus/anna_karenina.txt" <<'PY' || fail "a tokenizer.json kiln wrote differs from its tokenizer.model"
import sys, sentencepiece, tokenizers
work, anna = sys.argv[1], sys.argv[2]
prose = open(anna, encoding="utf-8").read()
texts = [prose[:20000], *prose.split("\n")[:300],
         "Hello, world! It's 2024: 12345 + 0.5 = 12345.5; don't you THINK so?",
         "int main(int argc, char** argv) {\n\tfor (int i = 0; i < 10; ++i) printf(\"%d\\n\", i);\n}\n",
         "👨‍👩‍👧‍👦 🇷🇺 😀 emoji 中文 ∮ E⋅da = Q ﬁ ① ＡＢＣ",
         "   leading and trailing   \t\t  \n\n\n  spaces\u00a0nbsp\u2009thin\u3000ideo\u200bzw\u2028ls  ",
         "", " ", "\n", "\r\n\r\n"]
try:
    import transformers
except ImportError:
    transformers = None
for name in ("ru", "ru-unigram", "ext-llama2-tokenizer", "ext-mistral-tokenizer"):
    sp = sentencepiece.SentencePieceProcessor(model_file=f"{work}/{name}/tokenizer.model")
    hf = tokenizers.Tokenizer.from_file(f"{work}/{name}/tokenizer.json")
    assert hf.get_vocab_size() == sp.get_piece_size(), name
    bad = [t for t in texts if hf.encode(t, add_special_tokens=False).ids != sp.encode(t)]
    assert not bad, (name, len(bad), repr(bad[0][:80]))
    assert all(hf.decode(sp.encode(t)) == sp.decode(sp.encode(t)) for t in texts), name
    assert hf.encode("Привет").ids == [sp.bos_id()] + sp.encode("Привет"), name
    if transformers and name != "ext-llama2-tokenizer":  # LLaMA-2 ships no tokenizer_config.json
        tf = transformers.AutoTokenizer.from_pretrained(f"{work}/{name}")
        bad = [t for t in texts if tf(t, add_special_tokens=False)["input_ids"] != sp.encode(t)]
        assert not bad, (name, "transformers", len(bad), repr(bad[0][:80]))
    print(f"OK {name}/tokenizer.json: {len(texts)} texts, tokenizers{' and transformers' if transformers else ''} give sentencepiece's ids")
PY
# shrink: LLaMA-3 cut to 3,000 model tokens on the corpus, then extended (LEP's Optimized): the
# reference loads both, every byte survives (any text round-trips), added tokens keep their order.
"$KILN_BIN" tokenizer shrink "$KILN_SHARED_DIR/models/llama3-tokenizer" "$work/corpus.txt" --keep 3000 --out "$work/shrunk" > "$work/shrink.log" 2>&1 \
  || { cat "$work/shrink.log"; fail "shrink failed"; }
"$KILN_BIN" tokenizer shrink "$KILN_SHARED_DIR/models/llama3-tokenizer" "$work/corpus.txt" --keep 3000 --extend "$work/ru" --out "$work/optimized" > "$work/shrink2.log" 2>&1 \
  || { cat "$work/shrink2.log"; fail "shrink --extend failed"; }
grep -o "3256 of .*" "$work/shrink.log"
"$py" - "$work" <<'PY' || fail "the shrunk tokenizers do not load or round-trip in the reference"
import json, sys, tokenizers
work = sys.argv[1]
for name, size in (("shrunk", 3256), ("optimized", None)):
    t = tokenizers.Tokenizer.from_file(f"{work}/{name}/tokenizer.json")
    v = t.get_vocab(with_added_tokens=True)
    assert size is None or len(v) == size, (name, len(v))
    assert v["<|begin_of_text|>"] == 3000 and v["<|eot_id|>"] == 3009, (name, v["<|begin_of_text|>"])
    text = "Привет, мир! 😀 中文 ∮ E⋅da = Q <|eot_id|> tabs\t\t"
    assert t.decode(t.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text, name
    cfg = json.load(open(f"{work}/{name}/tokenizer_config.json"))
    assert cfg["added_tokens_decoder"]["3000"]["content"] == "<|begin_of_text|>"
PY
for path in "$work/ru/tokenizer.model" "$KILN_SHARED_DIR/models/llama2-tokenizer/tokenizer.model" "$KILN_SHARED_DIR/models/llama3-tokenizer" \
            "$work/ext-llama2-tokenizer/tokenizer.model" "$work/ext-llama3-tokenizer" "$work/shrunk" "$work/optimized"; do
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
