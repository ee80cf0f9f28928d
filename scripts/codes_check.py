"""Does a reusable degradation code help? Held-out photos only (configs/split.json), the benchmark's operator grid.

    python scripts/codes_check.py shoot -o docs/results/codes_shoot.json [--photos 12] [--max-pixels 500000]
    python scripts/codes_check.py faces -o docs/results/codes_faces.json [--max-pixels 500000]

shoot: for each operator, the first half of the photos are the shoot's photos with faces (their codes, every usable
face, pooled into one), the second half are treated as photos without a face: restored with the shoot's code,
without tokens (what a faceless photo gets otherwise), and with their own face's code (the upper reference).
faces: held-out photos with two or more usable faces, each operator: every usable face pooled (face="all") against
the largest face alone; the faces' agreement (cosine of each face's embedding to the pool) is reported beside the
gain, to see what happens when faces disagree.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from face2scene_core.codes import pool_codes
from face2scene_core.degradation.families import benchmark_grid
from face2scene_core.errors import Face2SceneError
from face2scene_core.evaluation.metrics import psnr
from face2scene_core.evaluation.photos import Columns, _apply, datasets_root, fit_pixels, select_photos
from face2scene_core.evaluation.stats import paired
from face2scene_core.imageio import load_image, write_bytes_atomic
from face2scene_core.pipeline import Face2ScenePipeline


def _summary(rows: list[dict], a: str, b: str) -> dict:
    out = {"all": paired([r[a] for r in rows], [r[b] for r in rows])}
    for fam in sorted({r["family"] for r in rows}):
        sel = [r for r in rows if r["family"] == fam]
        out[fam] = paired([r[a] for r in sel], [r[b] for r in sel])
    return out


def shoot(pipe, args) -> dict:
    photos = select_photos(args.photos, max_pixels=args.max_pixels)
    half = len(photos) // 2
    cols = Columns(pipe)  # the benchmark's restore: the same model call for every column
    rows = []
    for op in benchmark_grid():
        lqs = [_apply(p.image, op) for p in photos]
        codes = []
        for p, lq in zip(photos[:half], lqs[:half]):
            try:
                codes.append(pipe.code(lq, p.refs, face="all"))
            except Face2SceneError as exc:
                print(f"{op.name} {p.path.name}: {exc}", file=sys.stderr)
        code = pool_codes(codes)
        for p, lq in zip(photos[half:], lqs[half:]):
            own = cols.restore(pipe.restorer, lq, cols.tokens(lq, p.refs)[0])
            rows.append({"op": op.name, "family": op.family, "photo": p.path.name, "input": psnr(lq, p.image),
                         "shoot_code": psnr(cols.restore(pipe.restorer, lq, code.tokens), p.image),
                         "no_tokens": psnr(cols.restore(pipe.restorer, lq, None), p.image),
                         "own_face": psnr(own, p.image)})
        print(op.name, {k: round(float(np.mean([r[k] for r in rows if r["op"] == op.name])), 2)
                        for k in ("input", "shoot_code", "no_tokens", "own_face")}, flush=True)
    deg = [r for r in rows if r["family"] != "clean"]
    return {"photos": [p.path.name for p in photos], "shoot_photos": half, "max_pixels": args.max_pixels,
            "mean": {k: float(np.mean([min(r[k], 100) for r in deg])) for k in ("input", "shoot_code", "no_tokens",
                                                                                 "own_face")},
            "clean": {k: float(np.mean([min(r[k], 100) for r in rows if r["family"] == "clean"]))
                      for k in ("shoot_code", "no_tokens", "own_face")},
            "shoot_code_vs_no_tokens": _summary(deg, "shoot_code", "no_tokens"),
            "shoot_code_vs_input": _summary(deg, "shoot_code", "input"),
            "shoot_code_vs_own_face": _summary(deg, "shoot_code", "own_face"), "rows": rows}


def group_photos(pipe, max_pixels: int, min_side: float = 48.0) -> list[tuple[str, np.ndarray]]:
    """Held-out whole photos with two or more faces whose native crop is at least ``min_side`` px."""
    from face2scene_core.faces.align import estimate_alignment
    from face2scene_core.faces.warp import affine_scale

    root = datasets_root()
    split = json.loads(Path("configs/split.json").read_text())
    held = set(split["heldout"])
    out = []
    with open(root / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["path"] not in held or row["kind"] not in ("scene_with_faces", "old_photo"):
                continue
            img = fit_pixels(load_image(root / row["path"]), max_pixels)
            sides = [pipe.align_size / affine_scale(estimate_alignment(f.landmarks, pipe.align_size))
                     for f in pipe.detect(img)]
            if sum(s >= min_side for s in sides) >= 2:
                out.append((row["path"], img))
    return out


def faces(pipe, args) -> dict:
    groups = group_photos(pipe, args.max_pixels)
    rows = []
    for name, img in groups:
        for op in benchmark_grid():
            lq = _apply(img, op)
            rep: dict = {}
            try:
                pooled = pipe(lq, face="all")
                largest = pipe(lq, face="largest")
            except Face2SceneError as exc:
                print(f"{name} {op.name}: {exc}", file=sys.stderr)
                continue
            rep = pooled.report["face_used"]
            rows.append({"photo": name, "op": op.name, "family": op.family, "faces": len(rep["pooled"]),
                         "agreement_min": min(rep.get("agreement", [1.0])), "input": psnr(lq, img),
                         "all_faces": psnr(pooled.image, img), "largest": psnr(largest.image, img)})
        print(name, len([r for r in rows if r["photo"] == name]), "cases", flush=True)
    deg = [r for r in rows if r["family"] != "clean"]
    gain = np.asarray([r["all_faces"] - r["largest"] for r in deg])
    agree = np.asarray([r["agreement_min"] for r in deg])
    low = agree < np.median(agree) if len(agree) else agree
    return {"photos": [g[0] for g in groups], "max_pixels": args.max_pixels,
            "all_faces_vs_largest": _summary(deg, "all_faces", "largest") if deg else None,
            "all_faces_vs_input": _summary(deg, "all_faces", "input") if deg else None,
            "disagreeing_half": {"agreement_below": float(np.median(agree)) if len(agree) else None,
                                 "gain_mean": float(gain[low].mean()) if low.any() else None,
                                 "gain_mean_agreeing_half": float(gain[~low].mean()) if (~low).any() else None},
            "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["shoot", "faces"])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--max-pixels", type=int, default=500_000)
    ap.add_argument("--adapter")
    args = ap.parse_args()
    pipe = Face2ScenePipeline.from_paths(adapter=args.adapter, device="cpu")
    result = shoot(pipe, args) if args.what == "shoot" else faces(pipe, args)
    result["adapter"] = args.adapter or "embedded"
    write_bytes_atomic(args.output, json.dumps(result, indent=1).encode())
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "photos")}, indent=1)[:3000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
