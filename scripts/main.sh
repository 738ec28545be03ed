#!/usr/bin/env bash
# The README's main job: installs what is missing, builds kiln, and fine-tunes the bundled
# stories260K model on SST-2 with LS-LLaMA over 2 MPI ranks (recipes/tiny/sst2.yaml).
# Extra arguments are recipe overrides, e.g. `bash scripts/main.sh train.max_steps=50`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/install-deps.sh"
bash "$root/scripts/build.sh" --target kiln
cd "$root"
exec bash launch/local.sh -np 2 "${KILN_BUILD_DIR:-$root/build}/kiln" train recipes/tiny/sst2.yaml "$@"
