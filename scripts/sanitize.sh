#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer: installs clang (and what
# else is missing), builds the `sanitize` preset into build-sanitize/ and runs ctest there. Any
# sanitizer report fails its test. Extra arguments go to ctest (e.g. -L core, -R fuzz_).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KILN_EXTRA_PACKAGES="clang libclang-rt-dev ${KILN_EXTRA_PACKAGES:-}" bash "$root/scripts/install-deps.sh"
cd "$root"
cmake --preset sanitize >/dev/null
cmake --build --preset sanitize -j "$(nproc)"
ctest --preset sanitize "$@"
