#!/usr/bin/env bash
# The main job on the embedded default (CPU): installs what it needs into .venv (idempotent), then
# runs the online loop through the launcher: a real Atropos run-api, RayGRPOAtroposTrainer on verl
# serving a tiny Qwen2 (hf_cpu replica) as the policy server, and the `learnable` BaseEnv
# environment generating through it. Writes outputs/demo/summary.json and reward_loss.png; logs in
# outputs/demo/logs. Arguments go to the demo, e.g. `scripts/demo.sh --steps 40` or
# `scripts/demo.sh --no-weight-sync --workdir outputs/demo_no_sync` (the control run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m recipe.atropos.examples.demo_cpu --workdir outputs/demo "$@"
