#!/usr/bin/env bash
# The main job on the embedded default. Installs what it needs into .venv (idempotent).
# For now: the Atropos data path end to end against a real run-api (the training demo replaces it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
exec .venv/bin/python -m recipe.atropos.examples.api_roundtrip "$@"
