"""How much disk ``pip install -r requirements.txt`` adds to a ComfyUI environment, measured on an installed venv.

    .venv/bin/python scripts/install_size.py [--comfyui-requirements PATH]

Walks the dependency closure of ``requirements.txt`` through the installed distributions' metadata and sums the
sizes their ``RECORD`` files list. torch / torchvision / torchaudio and their CUDA wheels (``nvidia-*``, triton)
are left out: the pack never installs them. With ``--comfyui-requirements`` (ComfyUI's own requirements.txt),
packages that ComfyUI itself needs are left out too, which is what installing the pack into a working ComfyUI adds.
"""

from __future__ import annotations

import argparse
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
NEVER = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str]) -> set[str]:
    seen, todo = set(), [_norm(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or NEVER.match(name):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(_norm(r.name))
    return seen


def size_mb(names: set[str]) -> float:
    total = 0
    for name in names:
        for f in metadata.distribution(name).files or []:
            p = Path(f.locate())
            if p.is_file():
                total += p.stat().st_size
    return total / 1e6


def read_requirements(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            out.append(Requirement(line).name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui-requirements", type=Path, help="ComfyUI's requirements.txt (its packages are not counted)")
    args = ap.parse_args(argv)
    pack = closure(read_requirements(ROOT / "requirements.txt"))
    print(f"requirements.txt closure without torch: {len(pack)} packages, {size_mb(pack):.0f} MB")
    if args.comfyui_requirements:
        extra = pack - closure(read_requirements(args.comfyui_requirements))
        print(f"beyond ComfyUI's own requirements: {len(extra)} packages, {size_mb(extra):.0f} MB")
        for name in sorted(extra, key=lambda n: -size_mb({n}))[:8]:
            print(f"  {name}: {size_mb({name}):.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
