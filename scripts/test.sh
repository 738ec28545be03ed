#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything, runs the whole suite
# (unit tests, multi-rank tests under mpirun -np 2, end-to-end tests) through ctest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/install-deps.sh"
bash "$root/scripts/build.sh"
cd "${KILN_BUILD_DIR:-$root/build}"
ctest --output-on-failure "$@"
