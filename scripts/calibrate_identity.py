"""Calibrate the dlib same-person threshold on the identity photos of ``../shared/datasets``.

    nice -n 19 .venv/bin/python scripts/calibrate_identity.py --json docs/identity_threshold.json

Every photo of ``manifest.csv`` with an identity label (deepface pNN, face-api.js characters, dlib johns,
facenet, gfpgan) is cropped around its largest face (2x the face box, at most 512 px) and embedded twice with
the shipped dlib embedder: clean, and degraded by one Real-ESRGAN second-order operator (seed = the photo's
index), the way Face2Scene's input photos are. Pairs are formed inside each half of ``configs/split.json``
(train identities / held-out identities): "same" = two photos of one identity, "different" = two identities.

* ``clean``: both photos clean (reference vs reference).
* ``degraded``: the first photo degraded, the second clean (Face2Scene's case: a degraded photo against clean
  references).

The threshold is chosen on the TRAIN pairs of both conditions together: the similarity that minimises the
balanced error (mean of the false-alarm rate on same-person pairs and the miss rate on different-person pairs).
The held-out rates at that threshold are reported beside the train rates, with the shipped example's score.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
from pathlib import Path

import numpy as np

from face2scene_core.degradation import DegradationConfig, RealESRGANDegradation, degrade_image
from face2scene_core.faces import get_detector, get_embedder
from face2scene_core.faces.select import mean_embedding
from face2scene_core.imageio import load_image

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("calibrate_identity")
CROP_MAX = 512


def face_crop(image: np.ndarray, face) -> np.ndarray:
    """The region of 2x the face box around the face, downscaled to at most ``CROP_MAX`` px."""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 2
    h, w = image.shape[:2]
    a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    crop = image[b:int(min(h, cy + side / 2)), a:int(min(w, cx + side / 2))]
    scale = CROP_MAX / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


def embed_largest(image, detector, embedder):
    faces = detector.detect(image)
    if not faces:
        return None
    return embedder.embed(image, max(faces, key=lambda f: f.area))


def pair_scores(emb_a: dict, emb_b: dict, ident: dict, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Similarities of (same-identity, different-identity) pairs: ``emb_a`` of one photo vs ``emb_b`` of the other.
    Each unordered pair once when ``emb_a is emb_b``; both orders otherwise (degraded vs clean is not symmetric)."""
    same, diff = [], []
    pairs = itertools.combinations(names, 2) if emb_a is emb_b else itertools.permutations(names, 2)
    for p, q in pairs:
        if p not in emb_a or q not in emb_b:
            continue
        s = float(np.dot(emb_a[p], emb_b[q]))
        (same if ident[p] == ident[q] else diff).append(s)
    return np.array(same), np.array(diff)


def rates(same: np.ndarray, diff: np.ndarray, thr: float) -> dict:
    return {"false_alarm_same_person": float((same < thr).mean()) if len(same) else None,
            "missed_different_person": float((diff >= thr).mean()) if len(diff) else None}


def summary(x: np.ndarray) -> dict:
    q = np.percentile(x, [1, 5, 25, 50, 75, 95, 99]) if len(x) else [None] * 7
    return {"n": int(len(x)), "min": float(x.min()), "max": float(x.max()), "mean": float(x.mean()),
            **{f"p{p}": float(v) for p, v in zip((1, 5, 25, 50, 75, 95, 99), q)}}


def choose_threshold(same: np.ndarray, diff: np.ndarray) -> float:
    """The similarity minimising (false alarms on same + misses on different) / 2; ties -> the lowest (fewer false
    alarms), at the midpoint between two observed scores."""
    grid = np.unique(np.round(np.concatenate([same, diff]), 4))
    cands = np.concatenate([[grid[0] - 1e-3], (grid[:-1] + grid[1:]) / 2, [grid[-1] + 1e-3]])
    ber = [((same < t).mean() + (diff >= t).mean()) / 2 for t in cands]
    return float(round(cands[int(np.argmin(ber))], 3))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--split", type=Path, default=ROOT / "configs" / "split.json")
    ap.add_argument("--json", type=Path, help="write the distributions and rates here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    split = json.loads(args.split.read_text())
    halves = {"train": set(split["train_identities"]), "heldout": set(split["heldout_identities"])}
    with open(args.datasets / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["identity"]]
    detector, embedder = get_detector(), get_embedder()
    deg = RealESRGANDegradation(DegradationConfig())
    ident, clean, degraded, missed = {}, {}, {}, []
    for i, row in enumerate(rows):
        image = load_image(args.datasets / row["path"])
        faces = detector.detect(image)
        if not faces:
            missed.append(row["path"])
            continue
        crop = face_crop(image, max(faces, key=lambda f: f.area))
        e = embed_largest(crop, detector, embedder)
        if e is None:
            missed.append(row["path"])
            continue
        ident[row["path"]], clean[row["path"]] = row["identity"], e
        lq = degrade_image(crop, deg.sample(np.random.default_rng(i)))
        d = embed_largest(lq, detector, embedder)
        if d is not None:
            degraded[row["path"]] = d
        log.info("%3d/%d %s %s", i + 1, len(rows), row["identity"], "" if d is not None else "(no face after degrading)")

    result = {"command": "scripts/calibrate_identity.py", "embedder": "dlib", "photos": len(rows),
              "no_face_clean": missed, "no_face_degraded": sorted(set(clean) - set(degraded)), "halves": {}}
    pooled = {}
    for half, ids in halves.items():
        names = sorted(p for p in clean if ident[p] in ids)
        conds = {"clean": pair_scores(clean, clean, ident, names), "degraded": pair_scores(degraded, clean, ident, names)}
        pooled[half] = conds
        result["halves"][half] = {"identities": len({ident[p] for p in names}), "photos": len(names)}
    train_same = np.concatenate([pooled["train"][c][0] for c in ("clean", "degraded")])
    train_diff = np.concatenate([pooled["train"][c][1] for c in ("clean", "degraded")])
    thr = choose_threshold(train_same, train_diff)
    result["threshold"] = thr
    for half, conds in pooled.items():
        for cond, (same, diff) in conds.items():
            result["halves"][half][cond] = {"same": summary(same), "different": summary(diff), "at_threshold": rates(same, diff, thr),
                                            "at_0.92": rates(same, diff, 0.92)}

    ex = ROOT / "example_inputs"
    photo, ref = load_image(ex / "astronaut_lq.png"), load_image(ex / "refs" / "astronaut_ref.png")
    ref_emb = mean_embedding(embed_largest(ref, detector, embedder)[None])
    result["example_score"] = round(float(np.dot(embed_largest(photo, detector, embedder), ref_emb)), 4)

    for half in ("train", "heldout"):
        for cond in ("clean", "degraded"):
            r = result["halves"][half][cond]
            log.info("%-8s %-9s same n=%4d median %.3f min %.3f | different n=%5d median %.3f max %.3f | "
                     "at %.3f: same flagged %.1f%%, different passed %.1f%%", half, cond, r["same"]["n"],
                     r["same"]["p50"], r["same"]["min"], r["different"]["n"], r["different"]["p50"],
                     r["different"]["max"], thr, 100 * r["at_threshold"]["false_alarm_same_person"],
                     100 * r["at_threshold"]["missed_different_person"])
    log.info("threshold %.3f (train, balanced error); shipped example scores %.4f", thr, result["example_score"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
