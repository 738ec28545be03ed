#!/usr/bin/env bash
# The project's own Python environment, <repo>/.venv, from PyPI at pinned versions:
#   - PyPI's torch wheel 2.11.0 (CUDA 13.0): kiln builds against the C++ libtorch inside it
#     (headers, libraries, share/cmake/Torch), and it brings the CUDA and NCCL libraries it needs.
#     Required: without it kiln cannot build, and this script fails.
#   - the reference libraries kiln's tests compare with (Hugging Face `tokenizers`, `transformers`,
#     `peft`, `sentencepiece`, TensorBoard's event reader, llama.cpp's `gguf`).
#     Optional: when pip cannot install them the tests that need them report themselves skipped.
# Safe to run again: it installs only what is missing. The first run downloads about 2.6 GB.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$root/.venv
required=(torch==2.11.0)
optional=(tokenizers==0.23.3 sentencepiece==0.2.3 transformers==5.24.0 peft==0.21.2 tensorboard==2.21.0 gguf==0.19.0)
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv" || { echo "python-env: cannot make $venv (python3-venv missing?)" >&2; exit 1; }
fi
have() {
  "$venv/bin/python" - "$@" <<'PY'
import importlib.metadata as m, sys
def have(req):
    name, version = req.split("==")
    try:
        return m.version(name).split("+")[0] == version
    except m.PackageNotFoundError:
        return False
sys.exit(0 if all(have(r) for r in sys.argv[1:]) else 1)
PY
}
pip_install() { "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"; }
if ! have "${required[@]}"; then
  echo "python-env: installing ${required[*]} into $venv (about 2.6 GB on the first run)"
  pip_install "${required[@]}" || { echo "python-env: pip could not install ${required[*]}: kiln needs its libtorch" >&2; exit 1; }
fi
if ! have "${optional[@]}"; then
  echo "python-env: installing ${optional[*]} into $venv"
  pip_install "${optional[@]}" \
    || echo "python-env: pip could not install ${optional[*]}; tests that compare with them will be skipped"
fi
echo "python-env: $venv has ${required[*]} ${optional[*]}"
