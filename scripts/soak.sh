#!/usr/bin/env bash
# Soak run (by hand, not in CI): environments producing faster than the trainer consumes, 10 minutes
# by default, then Ctrl-C; figures in outputs/soak/soak.json (see docs/reliability.md).
#   bash scripts/soak.sh [--minutes 10] [--ahead 8] [--workdir outputs/soak]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/usage.sh
print_usage_if_asked "$0" .venv recipe.atropos.examples.soak_cpu "$@"
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m recipe.atropos.examples.soak_cpu "$@"
