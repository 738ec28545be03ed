#!/usr/bin/env bash
# Prints which src/ folders each src/ folder includes (#include "<folder>/..."), one line per
# folder, and fails (exit 1) when the engine (core, parallel, data, model, train) includes methods/
# or cli/, or a lower layer includes a higher one: core <- parallel, data, model <- train <- methods <- cli.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
declare -A layer=([core]=0 [parallel]=1 [data]=1 [model]=1 [train]=2 [methods]=3 [cli]=4)
status=0
for dir in "$root"/src/*/; do
  f=$(basename "$dir")
  deps=$(grep -rhoE '#include "[a-z_]+/' "$dir" | sed -E 's/#include "([a-z_]+)\//\1/' | sort -u | grep -vx "$f" | tr '\n' ' ' || true)
  echo "$f -> ${deps:-(none)}"
  for d in $deps; do
    if [[ -n "${layer[$f]:-}" && -n "${layer[$d]:-}" && ${layer[$d]} -ge ${layer[$f]} && "$f:$d" != "model:data" ]]; then
      echo "  not allowed: $f includes $d" >&2
      status=1
    fi
  done
done
exit $status
