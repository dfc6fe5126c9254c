#!/usr/bin/env bash
# The test suite: installs what it needs into .venv (idempotent), then runs pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k client`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# pytest exits 5 when it collects no test; with `set -e` that fails this script, as it should.
exec .venv/bin/python -m pytest -p no:cacheprovider -ra --timeout=900 "$@"
