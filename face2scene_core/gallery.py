"""Batch runs over photos and folders: the gallery workflow of artists and photographers.

Rules every batch follows: originals are never overwritten (outputs go to a separate folder, and an existing
output name gets a ``_1``, ``_2`` suffix), each output is written atomically, and a failure on one image is
reported and the batch goes on. Restores are resumable and report as they go (:mod:`face2scene_core.batch`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .errors import InputImageError, ReferenceImageError
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
    """Every image of a folder (or one image) as upright RGB arrays; unreadable files raise ReferenceImageError."""
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


def restore_paths(pipe, input_path: Path, output: Path, *, refs=None, report_path: Path | None = None,
                  fmt: str = "same", recursive: bool = True, on_item=None, **kwargs: Any) -> dict:
    """Restore one photo or every photo of a folder (subfolders too) with ``pipe`` (a pipeline, or a callable
    that builds one once the paths are checked); resumable, see :mod:`face2scene_core.batch`.

    Returns the summary: counts, ``report`` (the JSON-lines journal) and ``results`` (the latest record of
    every input of this plan).
    """
    from .batch import Journal, iter_results, plan_run, run_plan

    options = {k: v for k, v in kwargs.items()}
    plan = plan_run(input_path, output, refs=refs, fmt=fmt, recursive=recursive, report=report_path,
                    options=options)
    with Journal(plan.journal) as journal:
        summary = run_plan(pipe, plan, journal, on_item=on_item, **kwargs)
    inputs = {str(j.src) for j in plan.jobs}
    summary["results"] = [r for r in iter_results(plan.journal) if r["input"] in inputs]
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


ESTIMATES_PLOT = "face2scene_estimates.png"
NAMED_AT_MOST = 12  #: photos the estimates plot names at most


def photos_to_name(rows, most: int = NAMED_AT_MOST) -> set[str]:
    """The photos the estimates plot names, from ``(name, estimate)`` rows: the ``most`` most degraded among those
    visibly degraded (noise sigma / 5 + blur sigma + motion length / 5 >= 1: e.g. noise of 5 levels, or 1 px of
    blur); the clean ones pile up near the origin, where names would only cover each other."""
    score = {name: e["noise_sigma"]["value"] / 5 + e["blur_sigma"]["value"] + e["motion_length"]["value"] / 5
             for name, e in rows}
    return {n for n in sorted(score, key=score.get, reverse=True)[:most] if score[n] >= 1.0}


def plot_estimates(records, path: Path) -> Path | None:
    """Scatter of the estimated degradation of every photo of a gallery run (noise vs blur, marker by JPEG
    quality, motion as an arrow-shaped marker), from the run's report records; ``None`` when no photo has one."""
    rows = []
    for rec in records:
        est = (rec.get("report") or {}).get("estimate")
        if rec.get("ok") and est and "untrusted" not in est:
            rows.append((Path(rec["input"]).name, est))
    if not rows:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=110)
    named = photos_to_name(rows)
    for name, e in rows:
        x, y = e["noise_sigma"]["value"], e["blur_sigma"]["value"]
        q = e["jpeg_quality"]["value"]
        moving = e["motion_length"]["value"] >= 3
        ax.errorbar(x, y, xerr=e["noise_sigma"]["sd"], yerr=e["blur_sigma"]["sd"], fmt="none", ecolor="0.75",
                    lw=0.8, zorder=1)
        sc = ax.scatter([x], [y], c=[q if q is not None else 100], cmap="viridis", vmin=10, vmax=100,
                        marker=">" if moving else "o", s=60, edgecolors="k", linewidths=0.5, zorder=2)
        if name in named:
            ax.annotate(name[:18] + (f" x{e['scale']['value']}" if e["scale"]["value"] > 1 else ""), (x, y),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    fig.colorbar(sc, ax=ax, label="JPEG quality (100 = none)")
    ax.set_xlabel("noise sigma (8-bit levels)")
    ax.set_ylabel("blur sigma (px)")
    ax.set_title(f"Estimated degradation of {len(rows)} photo(s) ('>' = motion blur >= 3 px)\n"
                 f"named: {len(named)} with noise / 5 + blur + motion / 5 >= 1 (at most {NAMED_AT_MOST})", fontsize=10)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())

