"""Batch runs over photos and folders: the gallery workflow of artists and photographers.

Rules every batch follows: originals are never overwritten (outputs go to a separate folder, and an existing
output name gets a ``_1``, ``_2`` suffix), each output is written atomically, and a failure on one image is
reported and the batch goes on. A JSON report lists every image with its result or error.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .errors import Face2SceneError, InputImageError, ReferenceImageError
from .imageio import IMAGE_SUFFIXES, list_images, load_image, safe_output_path, save_image, write_bytes_atomic

log = logging.getLogger(__name__)


def _inputs(path: Path) -> tuple[list[Path], bool]:
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise InputImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder '{path}'.")
        return files, True
    if not path.exists():
        raise InputImageError(f"input not found: '{path}'.")
    return [path], False


def load_references(refs: Path | None) -> list:
    """Every image of a folder (or one image) as RGB arrays; unreadable files raise ReferenceImageError."""
    if refs is None:
        return []
    files = list_images(refs) if refs.is_dir() else [refs]
    if not files:
        raise ReferenceImageError(f"no reference images in '{refs}'. Put clean photos of the person there.")
    out = []
    for f in files:
        try:
            out.append(load_image(f))
        except InputImageError as exc:
            raise ReferenceImageError(f"reference '{f.name}' cannot be used: {exc}") from exc
    return out


def _output_for(src: Path, output: Path, is_folder: bool) -> Path:
    if is_folder or output.is_dir() or output.suffix == "":
        dest = output / f"{src.stem}.png"
    else:
        dest = output
    if dest.resolve() == src.resolve():
        raise InputImageError(f"output '{dest}' is the input itself; choose another output path.")
    return safe_output_path(dest)


def restore_paths(pipe, input_path: Path, output: Path, *, refs: Path | None = None,
                  report_path: Path | None = None, **kwargs: Any) -> dict:
    """Restore one photo or every photo of a folder with ``pipe``; returns and writes a JSON summary."""
    files, is_folder = _inputs(input_path)
    references = load_references(refs)
    if is_folder:
        output.mkdir(parents=True, exist_ok=True)
    results = []
    for src in tqdm(files, desc="restore", unit="img", disable=len(files) < 2):
        t0 = time.perf_counter()
        item: dict[str, Any] = {"input": str(src)}
        try:
            photo = load_image(src)
            res = pipe(photo, references, **kwargs)
            dest = _output_for(src, output, is_folder)
            save_image(dest, res.image)
            item.update(ok=True, output=str(dest), report=res.report)
        except Face2SceneError as exc:
            log.warning("%s: %s", src.name, exc)
            item.update(ok=False, error=str(exc), error_type=type(exc).__name__)
        item["seconds"] = round(time.perf_counter() - t0, 3)
        results.append(item)
    if report_path is None:
        base = output if (is_folder or output.is_dir()) else output.parent
        report_path = safe_output_path(base / "face2scene_report.json")
    summary = {"results": results, "report": str(report_path)}
    write_bytes_atomic(report_path, json.dumps(summary, indent=2).encode())
    return summary


def degrade_paths(input_path: Path, output: Path, *, seed: int = 0, preset: str | None = None,
                  copies: int = 1, spatially_varying: bool = False) -> list[Path]:
    """Degraded copies of one image or a folder, each with a JSON file of the sampled operator."""
    import numpy as np

    from .degradation import PRESETS, DegradationConfig, RealESRGANDegradation, degrade_image

    files, _ = _inputs(input_path)
    output.mkdir(parents=True, exist_ok=True)
    cfg = DegradationConfig(spatial_blur_prob=1.0) if spatially_varying else DegradationConfig()
    deg = RealESRGANDegradation(cfg)
    rng = np.random.default_rng(seed)
    written = []
    for src in files:
        try:
            img = load_image(src)
        except InputImageError as exc:
            log.warning("skipping %s: %s", src, exc)
            continue
        for c in range(copies):
            params = PRESETS[preset] if preset else deg.sample(rng)
            lq = degrade_image(img, params)
            name = f"{src.stem}_{preset or 'deg'}{c:02d}" if copies > 1 or not preset else f"{src.stem}_{preset}"
            dest = safe_output_path(output / f"{name}.png")
            save_image(dest, lq)
            meta = {"source": str(src), "seed": seed, "copy": c, "preset": preset, "params": params.to_dict()}
            write_bytes_atomic(dest.with_suffix(".json"), json.dumps(meta, indent=2).encode())
            written.append(dest)
    return written
