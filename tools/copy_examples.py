"""Copy the pack's example photos into ComfyUI's input folder, where the shipped workflows look for them.

    python custom_nodes/ComfyUI-Face2Scene/tools/copy_examples.py            (run from the ComfyUI folder)
    python tools/copy_examples.py --input /path/to/ComfyUI/input            (any ComfyUI)

Writes ``astronaut_lq.png`` (the photo) and ``astronaut_ref.png`` (its reference), which the workflows' Load Image
nodes name, and the same two photos into ``face2scene_gallery/`` and ``face2scene_references/``, the folders of the
gallery workflow. Files that already exist are left alone (yours are never overwritten). Only the Python
standard library is used.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

PACK = Path(__file__).resolve().parents[1]
EXAMPLES = PACK / "example_inputs"
COPIES = (  # (file of the pack, path under ComfyUI's input folder)
    ("astronaut_lq.png", "astronaut_lq.png"),
    ("refs/astronaut_ref.png", "astronaut_ref.png"),
    ("astronaut_lq.png", "face2scene_gallery/astronaut_lq.png"),
    ("refs/astronaut_ref.png", "face2scene_references/astronaut_ref.png"),
)


def default_input_dir() -> Path:
    """``ComfyUI/input`` for a pack installed as ``ComfyUI/custom_nodes/<pack>``."""
    return PACK.parent.parent / "input"


def copy_examples(input_dir: Path) -> list[tuple[Path, bool]]:
    """Copy the examples into ``input_dir``; returns ``(destination, copied)`` per file (``False``: it existed)."""
    if not input_dir.is_dir():
        raise FileNotFoundError(f"ComfyUI input folder not found: {input_dir}; pass --input <ComfyUI>/input")
    done = []
    for src, rel in COPIES:
        dest = input_dir / rel
        if dest.exists():
            done.append((dest, False))
            continue
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(EXAMPLES / src, dest)
        done.append((dest, True))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=None,
                        help="ComfyUI's input folder (default: ../../input from this pack, i.e. ComfyUI/input)")
    args = parser.parse_args(argv)
    try:
        done = copy_examples(args.input or default_input_dir())
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for dest, copied in done:
        print(f"{'copied ' if copied else 'kept   '} {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
