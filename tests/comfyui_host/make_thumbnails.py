"""Make the Template Browser thumbnails of the shipped workflows from their real outputs.

Current ComfyUI lists every ``workflows/<name>.json`` of a pack as a template and shows ``workflows/<name>.jpg``
as its card. This script runs each API workflow ``workflows/api/<name>.json`` in ComfyUI (in this process, the
test host) on the pack's example photos (copied by ``tools/copy_examples.py``, as a user would) and writes a
400x400 JPEG per workflow: the input photo on the left half and the restored photo on the right half (the Stage I
preview: the aligned face and its Ref-FR restoration side by side).

    cd tests && ../.venv/bin/python -m comfyui_host.make_thumbnails ../workflows/api ../workflows
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .inprocess import boot
from .paths import REPO_ROOT

SIDE = 400
SHOW = {  # workflow -> (node id of the image on the left or None for the input photo, node id on the right)
    "face2scene_staged": (None, "40"),
    "face2scene_all_in_one": (None, "40"),
    "face2scene_no_tokens": (None, "40"),
    "face2scene_gallery": (None, "40"),
    "face2scene_face_preview": ("42", "43"),
}
"""Which outputs each thumbnail shows (every shipped workflow must be listed: an unknown one is an error)."""


def _square(image: Image.Image) -> Image.Image:
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return image.convert("RGB").crop(box).resize((SIDE, SIDE), Image.Resampling.LANCZOS)


def thumbnail(left: Image.Image, right: Image.Image) -> Image.Image:
    """``SIDE x SIDE``: the left half of ``left`` and the right half of ``right`` (both centre-cropped to squares),
    with a thin white line between them."""
    a, b = np.asarray(_square(left)).copy(), np.asarray(_square(right))
    a[:, SIDE // 2:] = b[:, SIDE // 2:]
    a[:, SIDE // 2 - 1:SIDE // 2 + 1] = 255
    return Image.fromarray(a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("api_folder", type=Path, help="folder of API-format workflows (*.json)")
    parser.add_argument("ui_folder", type=Path, help="folder of the UI workflows: <name>.jpg is written beside each")
    args = parser.parse_args(argv)
    apis = sorted(args.api_folder.glob("*.json"))
    unknown = [p.stem for p in apis if p.stem not in SHOW]
    if not apis or unknown:
        print(f"no API workflows in {args.api_folder}" if not apis else
              f"no thumbnail recipe for {unknown}; add them to SHOW in {__file__}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="face2scene-thumbs-") as work:
        runtime = boot(work_dir=work)
        subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "copy_examples.py"), "--input",
                        str(runtime.input_dir)], check=True, capture_output=True)
        for path in apis:
            prompt = json.loads(path.read_text())
            result = runtime.execute(prompt)
            if not result.success:
                print(f"{path.name}: {result.error_message}", file=sys.stderr)
                return 1
            left_id, right_id = SHOW[path.stem]
            right = Image.open(result.images(right_id)[0])
            left = (Image.open(result.images(left_id)[0]) if left_id else
                    Image.open(runtime.input_dir / (prompt["10"]["inputs"]["image"] if "10" in prompt
                                                    else "face2scene_gallery/astronaut_lq.png")))
            out = args.ui_folder / f"{path.stem}.jpg"
            thumbnail(left, right).save(out, quality=88)
            print(f"{path.name} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
