#!/usr/bin/env bash
# CPU smoke: real run-api + a BaseEnv environment + 3 steps of RayGRPOAtroposTrainer through
# `python -m verl.trainer.main_ppo`. Exits 0 only if every step trained with grad_norm > 0.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/usage.sh
print_usage_if_asked "$0" .venv recipe.atropos.examples.smoke_cpu "$@"
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m recipe.atropos.examples.smoke_cpu "$@"
