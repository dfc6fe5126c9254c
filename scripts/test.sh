#!/usr/bin/env bash
# The test suite: installs what it needs (idempotent), then runs pytest.
#   scripts/test.sh            everything: the suite in .venv, then the vLLM tests (marker `vllm`) in
#                              .venv-vllm (scripts/setup.sh vllm; ATROPOS_TEST_VLLM=0 leaves them out)
#   scripts/test.sh ARGS...    pytest ARGS in .venv only, e.g. `scripts/test.sh -k client`
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/usage.sh
print_usage_if_asked "$0" "" "" "$@"
bash scripts/setup.sh
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PYTEST=(-m pytest -p no:cacheprovider -ra --timeout=900)
# pytest exits 5 when it collects no test; with `set -e` that fails this script, as it should.
if [ "$#" -gt 0 ]; then
    exec .venv/bin/python "${PYTEST[@]}" "$@"
fi
.venv/bin/python "${PYTEST[@]}" -m "not vllm"
if [ "${ATROPOS_TEST_VLLM:-1}" != 0 ]; then
    bash scripts/setup.sh vllm
    exec .venv-vllm/bin/python "${PYTEST[@]}" -m vllm
fi
