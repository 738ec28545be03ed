#!/usr/bin/env bash
# `kiln preprocess` end to end: 1 rank and 2 ranks (mpirun) write byte-identical stores; bad input
# exits 2 with file:line. The stores are LS-LLaMA's (its token classification encoder).
# Needs KILN_BIN, KILN_SHARED_DIR, KILN_MPIRUN (set by ctest).
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/r.yaml" <<YAML
name: cli
method: ls_llama
model:
  path: $KILN_SHARED_DIR/models/llama2-tokenizer
data:
  format: conll
  train: $KILN_SHARED_DIR/data/conll2003/eng.testa
  eval: $KILN_SHARED_DIR/data/crossner/ai/dev.txt
  labels: [O, B-PER, I-PER, B-LOC, I-LOC, B-ORG, I-ORG, B-MISC, I-MISC, B-algorithm]
  max_len: 128
  store_dir: $work/store
YAML
"$KILN_BIN" preprocess "$work/r.yaml" 2> "$work/err1" && { echo "FAIL: eval tags outside the declared set were accepted"; exit 1; } || rc=$?
[ "$rc" = 2 ] || { echo "FAIL: exit code $rc, expected 2"; cat "$work/err1"; exit 1; }
grep -q "labels outside the declared (data.labels) set" "$work/err1" && grep -q "crossner/ai/dev.txt:" "$work/err1" ||
  { echo "FAIL: message"; cat "$work/err1"; exit 1; }
sed -i '/^  eval:/d; /^  labels:/d' "$work/r.yaml"
$KILN_MPIRUN -np 2 "$KILN_BIN" preprocess "$work/r.yaml"
mv "$work/store" "$work/store-np2"
"$KILN_BIN" preprocess "$work/r.yaml"
a=$(sha256sum < "$work/store/train.h5"); b=$(sha256sum < "$work/store-np2/train.h5")
[ "$a" = "$b" ] || { echo "FAIL: 1-rank and 2-rank stores differ"; exit 1; }
echo "OK: 1 and 2 ranks wrote the same store ($a)"
