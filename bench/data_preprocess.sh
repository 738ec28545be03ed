#!/usr/bin/env bash
# Preprocessing throughput on the Russian corpus with the LLaMA-2 tokenizer: kiln with 1 and 2
# ranks, and sentencepiece's spm_encode on the same lines. Prints figures; asserts nothing.
#   bench/data_preprocess.sh <build dir> [shared dir]
set -euo pipefail
build=${1:?usage: $0 <build dir> [shared dir]}
shared=${2:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
tok=$shared/models/llama2-tokenizer/tokenizer.model
corpus=$(mktemp --suffix=.txt)
trap 'rm -f "$corpus"' EXIT
# One document per line, CRLF removed: both tools see the same lines.
cat "$shared"/data/russian_corpus/anna_karenina.txt "$shared"/data/russian_corpus/besy_dostoevsky.txt \
  <(tail -n +2 "$shared"/data/russian_corpus/corpus_500.txt) | tr -d '\r' | grep -v '^[[:space:]]*$' > "$corpus"
echo "corpus: $(wc -l < "$corpus") lines, $(wc -c < "$corpus") bytes"
mpirun=(mpirun --oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && mpirun+=(--allow-run-as-root)
for np in 1 2; do
  OMP_NUM_THREADS=1 "${mpirun[@]}" -np "$np" "$build"/bench/data_preprocess_bench "$tok" "$corpus" 3
done
best=
for i in 1 2 3; do
  s=$( { /usr/bin/time -f %e spm_encode --model="$tok" --output_format=id < "$corpus" > "$corpus.ids"; } 2>&1 )
  best=$(python3 -c "print(min(float('$s'), float('${best:-1e9}')))")
done
n=$(wc -w < "$corpus.ids")
rm -f "$corpus.ids"
python3 -c "print(f'spm_encode (1 process)  tokens $n  {$best:.3f} s = {$n/$best:.0f} tokens/s  (best of 3)')"
