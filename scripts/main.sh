#!/usr/bin/env bash
# The README's main job: installs what is missing, builds kiln, and fine-tunes the bundled
# stories260K model on SST-2 with LS-LLaMA over 2 MPI ranks (recipes/tiny/sst2.yaml), then writes
# the tiny recipes' table with this run in it (checkpoints/report/report.md, `kiln report`).
# Extra arguments are recipe overrides, e.g. `bash scripts/main.sh train.max_steps=50`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/install-deps.sh"
bash "$root/scripts/build.sh" --target kiln
cd "$root"
kiln=${KILN_BUILD_DIR:-$root/build}/kiln
code=0
bash launch/local.sh -np 2 "$kiln" train recipes/tiny/sst2.yaml "$@" || code=$?
# The table is written whatever the run's outcome (a stopped run is marked missing in it).
"$kiln" report recipes/tiny --out checkpoints/report || echo "kiln report failed (see above)" >&2
exit $code
