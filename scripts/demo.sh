#!/usr/bin/env bash
# The main job on the embedded default (CPU): installs what it needs into .venv (idempotent), then
# starts a real Atropos run-api, an environment built on atroposlib's BaseEnv, and trains a tiny
# Qwen2 with RayGRPOAtroposTrainer through verl (python -m verl.trainer.main_ppo ... trainer_cls=...).
# Outputs (logs, metrics.jsonl, checkpoints) go to outputs/demo. Arguments go to the smoke driver,
# e.g. `scripts/demo.sh --steps 10`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m recipe.atropos.examples.smoke_cpu --workdir outputs/demo --steps 5 "$@"
