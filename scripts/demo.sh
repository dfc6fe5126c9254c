#!/usr/bin/env bash
# The main job on the embedded default (CPU): installs what it needs into .venv (idempotent), then
# runs the online loop through the launcher: a real Atropos run-api, RayGRPOAtroposTrainer on verl
# serving a tiny Qwen2 (hf_cpu replica) as the policy server, and the `learnable` BaseEnv
# environment generating through it. Writes outputs/demo/summary.json and training.png; logs in
# outputs/demo/logs. Arguments go to the demo, e.g. `scripts/demo.sh --steps 40` or
# `scripts/demo.sh --no-weight-sync --workdir outputs/demo_no_sync` (the control run).
# `scripts/demo.sh --rollout vllm` serves the environment from verl's vLLM replicas (vLLM's CPU
# build) instead, installed into .venv-vllm (`scripts/setup.sh vllm`) and run from there.
# `scripts/demo.sh --task math [--workdir DIR] [--seed S]`: SmolLM2-135M-Instruct learns the math environment
# (80%, with gsm8k 20%) on verl's vLLM replicas; held-out accuracy by verl's validation
# (examples/demo_math.py; outputs/demo_math/summary.json and heldout_reward.png).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/usage.sh
print_usage_if_asked "$0" .venv recipe.atropos.examples.demo_cpu "$@"
VENV=.venv
PROFILE=base
DEMO=demo_cpu
WORKDIR=outputs/demo
ARGS=()
previous=""
for arg in "$@"; do
    if [ "$arg" = "--task" ]; then previous="$arg"; continue; fi
    if [ "$previous" = "--task" ] || [[ "$arg" == --task=* ]]; then
        case "${arg#--task=}" in
            learnable) ;;
            math) DEMO=demo_math; WORKDIR=outputs/demo_math; VENV=.venv-vllm; PROFILE=vllm ;;
            *) echo "demo.sh: --task must be learnable or math, got '${arg#--task=}'" >&2; exit 2 ;;
        esac
        previous="$arg"; continue
    fi
    if [ "$arg" = "--rollout=vllm" ] || { [ "$previous" = "--rollout" ] && [ "$arg" = "vllm" ]; }; then
        VENV=.venv-vllm
        PROFILE=vllm
    fi
    ARGS+=("$arg")
    previous="$arg"
done
bash scripts/setup.sh "$PROFILE"
export PYTHONUNBUFFERED=1
exec "$VENV/bin/python" -m "recipe.atropos.examples.$DEMO" --workdir "$WORKDIR" "${ARGS[@]}"
