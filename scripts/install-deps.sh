#!/usr/bin/env bash
# Installs the Debian packages kiln needs, and only those that are missing (safe to run again).
# As root it installs them; as another user it prints the one apt-get line to run.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake pkg-config ccache git
  # libtorch is not a Debian package here: scripts/python-env.sh installs PyTorch's torch wheel
  # (2.11.0, CUDA 13.0) into .venv, and CMake finds it there.
  # MPI, storage, config, logging, tokenizer, CLI, JSON
  libopenmpi-dev openmpi-bin libhdf5-dev libyaml-cpp-dev libfmt-dev libspdlog-dev
  libsentencepiece-dev nlohmann-json3-dev libcli11-dev
  # spm_train / spm_encode: `kiln tokenizer train` runs libsentencepiece's trainer through them
  sentencepiece
  # tokenizer.json pre-tokenizers: regexes with Unicode properties
  libpcre2-dev
  # PRM800K ships as .jsonl.xz (FRACTAL's reader runs `xz -dc`)
  xz-utils
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev python3
  # the project's Python (.venv): libtorch, and the reference libraries tests compare with
  python3-venv python3-pip
)
# Extra packages for optional parts, e.g. KILN_EXTRA_PACKAGES="slurm-wlm munge" for the Slurm tests.
if [[ -n "${KILN_EXTRA_PACKAGES:-}" ]]; then
  read -r -a extra <<<"$KILN_EXTRA_PACKAGES"
  packages+=("${extra[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exec bash "$(dirname "${BASH_SOURCE[0]}")/python-env.sh"
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages; run as root:"
  echo "  sudo apt-get update && sudo $cmd"
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
$cmd
exec bash "$(dirname "${BASH_SOURCE[0]}")/python-env.sh"
