#!/usr/bin/env bash
# Runs a program on THIS machine with N MPI ranks, each pinned to its share of the cores:
#   launch/local.sh -np 2 build/kiln train recipes/tiny/sst2.yaml
#   launch/local.sh -np 2 --threads 4 build/kiln train ...    (oversubscribes when 2 x 4 > cores)
# Same options as launch/mpirun.sh, without a host file.
set -euo pipefail
for a in "$@"; do
  [[ $a == --hostfile ]] && { echo "launch/local.sh: runs on this machine only; use launch/mpirun.sh --hostfile" >&2; exit 2; }
  [[ $a == -- ]] && break
done
exec bash "$(dirname "${BASH_SOURCE[0]}")/mpirun.sh" "$@"
