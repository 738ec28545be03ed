#!/usr/bin/env bash
# The CLI turns recipe and usage errors into one line on stderr and exit code 2.
set -u
kiln=${KILN_BIN:?}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
expect() {  # expect <code> <substring> -- command...
  local code=$1 want=$2; shift 3
  local out; out=$("$@" 2>&1); local rc=$?
  if [[ $rc -ne $code ]]; then echo "FAIL: '$*' exited $rc, expected $code: $out"; fail=1; return; fi
  if [[ "$out" != *"$want"* ]]; then echo "FAIL: '$*' output lacks '$want': $out"; fail=1; return; fi
  echo "ok: $* -> $rc"
}
printf 'model:\n  path: m\ntrain:\n  lr: 0.1\n  max_step: 3\n' > "$tmp/typo.yaml"
printf 'model:\n  path: m\ntrain:\n  lr: big\n' > "$tmp/type.yaml"
printf 'model:\n  path: m\n' > "$tmp/ok.yaml"
printf 'method: ls_lama\nmodel:\n  path: m\n' > "$tmp/method.yaml"
expect 2 "typo.yaml:5: unknown key \`train.max_step\` (did you mean \`train.max_steps\`?)" -- "$kiln" recipe "$tmp/typo.yaml"
expect 2 "type.yaml:4: key \`train.lr\`: expected a number, got \`big\`" -- "$kiln" recipe "$tmp/type.yaml"
expect 2 "key \`train.lr\`: 50 is out of range [0, 10]" -- "$kiln" recipe "$tmp/ok.yaml" train.lr=50
expect 2 "bad override \`train.lr\`" -- "$kiln" recipe "$tmp/ok.yaml" train.lr
expect 2 "not found" -- "$kiln" recipe "$tmp/missing.yaml"
expect 2 "key \`model.path\`: is required but missing" -- "$kiln" recipe "$tmp/ok.yaml" model.path=
expect 0 "max_steps: 0" -- "$kiln" recipe "$tmp/ok.yaml"
# The methods' registry is the one list of methods: a typo gets its closest name and the list.
expect 2 "method.yaml:1: key \`method\`: unknown method \`ls_lama\` (did you mean \`ls_llama\`?); known methods: fractal, lep, lm, ls_llama, regress, uniner" -- "$kiln" recipe "$tmp/method.yaml"
# A recipe path that is a directory says so (it used to read as an empty recipe).
expect 2 "is a directory, not a recipe file" -- "$kiln" recipe "$tmp"
# An uncreatable run directory is refused naming its key, before anything runs.
model=${KILN_SOURCE_DIR:?}/models/stories260K
printf 'name: t\nmethod: lm\nmodel:\n  path: %s\ndata:\n  format: text\n  train: %s\n' "$model" "$tmp/ok.yaml" > "$tmp/lm.yaml"
touch "$tmp/afile"
expect 2 "key \`checkpoint.run_dir\`: cannot create $tmp/afile/run" -- "$kiln" train "$tmp/lm.yaml" checkpoint.run_dir="$tmp/afile/run"
# generate refuses to run past the model's context (stories260K: 512 positions).
expect 2 "exceed the model's context of 512" -- "$kiln" generate "$model" --prompt "Once upon a time" --max-new-tokens 600
expect 2 "" -- "$kiln" no-such-verb
expect 0 "kiln " -- "$kiln" version
exit $fail
