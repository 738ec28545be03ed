#!/usr/bin/env bash
# The project's own Python environment, <repo>/.venv: the reference libraries kiln's tests compare
# with (Hugging Face `tokenizers`, `sentencepiece`), at pinned versions, from PyPI. Safe to run
# again: it installs only what is missing. Without network access it says so and stops without
# failing the build: the tests that need it then report themselves skipped.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$root/.venv
requirements=(tokenizers==0.23.3 sentencepiece==0.2.3)
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv" || { echo "python-env: cannot make $venv (python3-venv missing?)"; exit 0; }
fi
if "$venv/bin/python" - "${requirements[@]}" <<'PY'
import importlib.metadata as m, sys
def have(req):
    name, version = req.split("==")
    try:
        return m.version(name) == version
    except m.PackageNotFoundError:
        return False
sys.exit(0 if all(have(r) for r in sys.argv[1:]) else 1)
PY
then
  echo "python-env: $venv has ${requirements[*]}"
  exit 0
fi
echo "python-env: installing ${requirements[*]} into $venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}" \
  || echo "python-env: pip could not install ${requirements[*]}; tests that compare with them will be skipped"
