"""FaDeX operator retrieval on the 16 train-check photos saved once more as JPEGs (a train-side check).

    python scripts/fadex_source_jpeg_check.py --fadex face2scene_core/weights/fadex runs/fadex_head12/final \
        [-o runs/source_jpeg_check.json]

``face2scene eval-photos --fadex-only --part train`` degrades the train-check photos as they are; most of them are
high-quality JPEGs, and the photo bank's faces are mostly PNGs, while people's photos (and several held-out ones) are
JPEGs of middling quality. Here each of the same 16 train photos is first saved as a JPEG of a quality drawn from
40..90 (numpy seed 0, one per photo; that JPEG is then the ground truth), then the benchmark grid is applied as
``eval-photos`` applies it. Prints operator retrieval across photos (top-1) with the ground-truth face, the Ref-FR face
and the Ref-FR face made without references, for each FaDeX folder given (one pass over the pairs for all of them).
Train photos only: a check to choose on, never a held-out figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from face2scene_core.degradation.families import GridOperator, photo_op  # noqa: E402
from face2scene_core.evaluation.photos import (_apply, benchmark_grid, face_pairs,  # noqa: E402
                                               retrieval_across_photos, select_photos)
from face2scene_core.fadex.head import CHECK_KINDS, pooled_features  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fadex", nargs="+", required=True, help="FaDeX folders to compare")
    ap.add_argument("--photos", type=int, default=16)
    ap.add_argument("--quality", type=int, nargs=2, default=(40, 90), help="range of the photos' JPEG quality")
    ap.add_argument("-o", "--out", type=Path, default=None, help="JSON of the figures")
    args = ap.parse_args(argv)
    from face2scene_core.pipeline import Face2ScenePipeline
    from face2scene_core.training.stage2 import load_fadex

    pipe = Face2ScenePipeline.from_paths(device="cpu")
    models = {d: load_fadex(d).float().eval() for d in args.fadex}
    rng = np.random.default_rng(0)
    photos = select_photos(args.photos, "train")
    qualities = [int(rng.integers(args.quality[0], args.quality[1] + 1)) for _ in photos]
    photos = [dataclasses.replace(p, image=_apply(p.image, GridOperator("source", "jpeg", photo_op(jpeg=q))))
              for p, q in zip(photos, qualities)]
    feats = {d: {k: [] for k in CHECK_KINDS} for d in models}
    for photo, rows in face_pairs(pipe, photos, benchmark_grid()):
        with torch.no_grad():
            for d, fx in models.items():
                for k in CHECK_KINDS:
                    feats[d][k].append(fx.head(pooled_features(fx, [r[k][0] for r in rows], [r[k][1] for r in rows])))
        print(f"{photo.path.name}: done", flush=True)
    result = {"photos": [p.path.name for p in photos], "qualities": qualities, "top1_across_photos": {}}
    for d in models:
        result["top1_across_photos"][d] = {
            k: retrieval_across_photos(torch.nn.functional.normalize(torch.stack(v), dim=-1).numpy())[0]
            for k, v in feats[d].items()}
        print(d, ", ".join(f"{k} {v:.1%}" for k, v in result["top1_across_photos"][d].items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
