"""Face pairs made the way the pipeline makes them, for FaDeX training (the *photo bank*).

    python -m face2scene_core.fadex.photo_bank --out runs/fadex_bank --groups 400 [--seed 0]

A user's photo is degraded whole, at its own scale; the pipeline finds the face, aligns it at 512 px, restores it
with the Ref-FR from the person's other photos and warps the result back onto the photo's pixels
(:func:`~face2scene_core.faces.align.native_pair`): FaDeX reads that native pair, often 300-700 px wide. FaDeX's
crop sampler (:mod:`.data`) instead degrades small crops of aligned face images, so the faces it learnt from are
smaller, and their JPEG grid, blur and noise sit at another scale than a photo's. The bank holds pairs made exactly
like the pipeline's, from the **train** split's photos with a face (never a held-out photo, and never one of the
train photos that ``face2scene eval-photos --part train`` measures, so that check stays on unseen photos):

* each *group* is one random photo operator (:class:`~face2scene_core.degradation.families.PhotoDegradation`, its
  own noise realisation per photo) applied to ``images_per_group`` different photos: the contrastive loss's
  positives are the pairs of a group, its negatives the other groups;
* each pair is stored four ways: the degraded face crop ``lq``, the Ref-FR face warped back ``reffr`` (references:
  the person's other train photos; none for a photo of an unnamed person: the Ref-FR then works without references,
  as for a user who gives none), the Ref-FR face made without references ``reffr0`` (the same as ``reffr`` for an
  unnamed person) and the ground-truth face through the same align-and-warp ``gt`` (what ``eval-photos --fadex-only``
  calls the GT pair), each a centre crop of at most ``crop`` px (never resized: resizing changes blur and noise).

Shards ``bank_00000.safetensors``, ... of ``shard_groups`` groups each are written atomically (their metadata
``operators``: each group's family and operator parameters as JSON; its noise seed is the group's, each photo got its
own); a rerun with the same arguments continues after the last whole shard. Nothing is pickled.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from ..errors import FaceTooSmallError, NoFaceError
from ..imageio import load_image, write_bytes_atomic

logger = logging.getLogger(__name__)

CLEAN_LABEL = -1
"""Group label of the ``clean`` operator: every clean pair is a positive of every other clean pair."""
BANK_LABEL_OFFSET = 1 << 40
"""Bank labels are offset by this in a training batch, so they never collide with the crop sampler's labels."""
BANK_FOLDER_STRIDE = 1 << 20
"""Group labels of the ``b``-th bank folder of a :class:`PhotoBank` are offset by ``b`` times this (groups of two
folders are different operators)."""
BANK_FAMILY_WEIGHTS = {"clean": 0.14, "jpeg": 0.18, "noise": 0.12, "blur": 0.15, "motion": 0.15, "downup": 0.16,
                       "realesrgan": 0.10}
"""The bank's operator mix: more of the mild families the Ref-FR face hardly changes (clean, JPEG, slight blur and
shake), where FaDeX has to read the degraded face itself."""


@dataclass
class BankPhoto:
    path: Path
    identity: str
    image: np.ndarray


def bank_photos(*, split_file: str | Path, min_pixels: int = 40_000, max_pixels: int = 1_000_000,
                exclude: Sequence[Path] = (), kinds: Sequence[str] = ("scene_with_faces", "face_crop")) -> list[BankPhoto]:
    """The split's ``train`` photos of ``kinds`` (at most ``max_pixels``, area-downscaled), minus ``exclude``;
    sorted by path."""
    from ..evaluation.photos import datasets_root, fit_pixels

    root = datasets_root()
    split = json.loads(Path(split_file).read_text())
    train = set(split["train"])
    skip = {Path(p).resolve() for p in exclude}
    out = []
    with open(root / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            path = (root / row["path"])
            if row["path"] not in train or row["kind"] not in kinds or path.resolve() in skip:
                continue
            if int(row["width"]) * int(row["height"]) < min_pixels:
                continue
            out.append(BankPhoto(path=path, identity=row["identity"], image=fit_pixels(load_image(path), max_pixels)))
    return sorted(out, key=lambda p: str(p.path))


def _centre(a: np.ndarray, side: int) -> np.ndarray:
    h, w = a.shape[:2]
    s = min(side, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return np.ascontiguousarray(a[top:top + s, left:left + s])


@torch.no_grad()
def build_bank(out: Path, *, groups: int = 400, images_per_group: int = 4, crop: int = 256, min_side: int = 128,
               shard_groups: int = 25, seed: int = 0, split_file: str | Path = "configs/split.json",
               family_weights: dict | None = None, max_refs: int = 2, max_photos: int | None = None,
               source_jpeg: tuple[float, int, int] | None = None) -> int:
    """Write (or complete) the bank in ``out``; returns the number of pairs in it. ``max_photos`` keeps the first
    photos only (quick checks).

    ``source_jpeg = (share, q_lo, q_hi)``: that share of the pairs starts from the photo saved once more as a JPEG of
    quality ``q_lo..q_hi`` (uniform), which is then the ground truth, as a user's photo is already a JPEG (the train
    split's face crops are mostly PNG): the operator's JPEG then lands on a JPEG, and "clean" means "as the file
    was". Each pair's source quality is stored in ``source_q`` (0: the photo as it is)."""
    from ..degradation import apply_degradation
    from ..degradation.families import build_degradation, photo_op
    from ..evaluation.photos import select_photo_paths
    from ..faces.align import align_face, native_crop_box, native_pair
    from ..imageio import to_float, to_uint8
    from ..pipeline import Face2ScenePipeline, _Timer
    from .data import with_noise_seed

    out.mkdir(parents=True, exist_ok=True)
    n_shards = -(-groups // shard_groups)
    done = [i for i in range(n_shards) if (out / f"bank_{i:05d}.safetensors").is_file()]
    if len(done) == n_shards:
        return count_pairs(out)
    held_for_eval = [path for _, path, _ in select_photo_paths(16, "train")]
    photos = bank_photos(split_file=split_file, exclude=held_for_eval)[:max_photos]
    pipe = Face2ScenePipeline.from_paths(device="cpu")
    faces, aligned = [], []
    t0 = time.time()
    for p in photos:  # the largest face of each photo, aligned once (it is also the person's reference)
        try:
            face, _ = pipe.choose_face(p.image, [], "largest", _Timer(), {})
            a = align_face(p.image, face, size=pipe.align_size)
        except (NoFaceError, FaceTooSmallError) as exc:  # a photo without a usable face is left out, and said so
            logger.info("left out %s: %s", p.path.name, str(exc).splitlines()[0])
            faces.append(None), aligned.append(None)
            continue
        x0, y0, x1, y1 = native_crop_box(a, p.image.shape)
        ok = min(x1 - x0, y1 - y0) >= min_side
        faces.append(face if ok else None), aligned.append(a if ok else None)
    keep = [i for i, f in enumerate(faces) if f is not None]
    logger.info("photo bank: %d of %d train photos have a face crop >= %d px (%.0f s)", len(keep), len(photos),
                min_side, time.time() - t0)
    if len(keep) < images_per_group:
        raise ValueError(f"only {len(keep)} usable train photos; the bank needs at least {images_per_group}")
    write_bytes_atomic(out / "photos.json", json.dumps({"photos": [str(photos[i].path) for i in keep],
                                                        "held_for_eval": [str(p) for p in held_for_eval]}, indent=1).encode())
    degradation = build_degradation("photo", {"family_weights": family_weights} if family_weights else {})
    for shard in range(n_shards):
        if shard in done:
            continue
        rng = np.random.default_rng([seed, shard])
        arrays: dict[str, np.ndarray] = {}
        labels, photo_ids, source_q, ops, n = [], [], [], [], 0
        for g in range(shard * shard_groups, min(groups, (shard + 1) * shard_groups)):
            family, params = degradation.sample_family(rng)
            label = CLEAN_LABEL if degradation.is_identity(params) else g
            ops.append({"group": g, "label": label, "family": family, "params": params.to_dict()})
            for i in rng.choice(keep, size=images_per_group, replace=False):
                p, a = photos[i], aligned[i]
                refs = [aligned[j].image for j in keep if j != i and p.identity and photos[j].identity == p.identity]
                src, q = p.image, 0
                if source_jpeg is not None and rng.random() < source_jpeg[0]:
                    q = int(rng.integers(source_jpeg[1], source_jpeg[2] + 1))
                    src = to_uint8(apply_degradation(to_float(p.image), photo_op(jpeg=q)))
                    a = align_face(src, faces[i], size=pipe.align_size)
                lq = to_uint8(apply_degradation(to_float(src), with_noise_seed(params, rng)))
                la = align_face(lq, faces[i], size=pipe.align_size)
                hq = pipe.reffr.restore(la.image, refs[:max_refs])
                hq0 = pipe.reffr.restore(la.image, []) if refs else hq
                lq_c, r_c = native_pair(lq, la, hq)
                _, r0_c = native_pair(lq, la, hq0)
                _, g_c = native_pair(lq, la, a.image)
                for key, arr in (("lq", lq_c), ("reffr", r_c), ("reffr0", r0_c), ("gt", g_c)):
                    arrays[f"{key}_{n}"] = _centre(arr, crop)
                labels.append(label), photo_ids.append(int(i)), source_q.append(q)
                n += 1
        arrays["label"] = np.asarray(labels, np.int64)
        arrays["source_q"] = np.asarray(source_q, np.int64)
        arrays["photo"] = np.asarray(photo_ids, np.int64)
        tmp = out / f".bank_{shard:05d}.tmp"
        save_file(arrays, str(tmp), metadata={"seed": str(seed), "shard": str(shard), "operators": json.dumps(ops)})
        tmp.rename(out / f"bank_{shard:05d}.safetensors")
        logger.info("shard %d/%d: %d pairs (%.0f s)", shard + 1, n_shards, n, time.time() - t0)
    return count_pairs(out)


def bank_shards(folders: Sequence[str | Path]):
    """Every shard of the bank folders in order, as ``(folder index, the shard's arrays)``; a folder without shards
    raises FileNotFoundError naming the command that builds it."""
    for b, one in enumerate(folders):
        files = sorted(Path(one).glob("bank_*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no bank_*.safetensors in '{one}': build it first with "
                                    f"`python -m face2scene_core.fadex.photo_bank --out {one}`")
        for f in files:
            yield b, load_file(str(f))


def folder_label(label: int, b: int) -> int:
    """A pair's operator label within several bank folders: the ``b``-th folder's groups are offset by ``b`` x
    :data:`BANK_FOLDER_STRIDE`; the clean pairs of every folder share one label."""
    return label if label == CLEAN_LABEL else label + b * BANK_FOLDER_STRIDE


def hq_face(shard: dict, kind: str, k: int) -> np.ndarray:
    """Pair ``k``'s HQ face of ``kind`` (``gt``, ``reffr``, ``reffr0``); a bank built before ``reffr0`` was stored
    gives the Ref-FR face made with references for it."""
    return shard.get(f"{kind}_{k}", shard[f"reffr_{k}"]) if kind == "reffr0" else shard[f"{kind}_{k}"]


def count_pairs(folder: Path) -> int:
    """Pairs in the bank's shards (reads each shard's ``label`` tensor only)."""
    total = 0
    for f in sorted(Path(folder).glob("bank_*.safetensors")):
        with safe_open(str(f), "np") as fh:
            total += fh.get_slice("label").get_shape()[0]
    return total


class PhotoBank:
    """The bank in memory (one folder or several), as training batches of ``K`` groups x ``M`` pairs (random
    ``crop_size`` crops, the same place in LQ and HQ). ``reffr_share`` of the pairs take the Ref-FR face as HQ, the rest
    the ground truth; ``norefs_share`` of those Ref-FR pairs take the Ref-FR face made without references (banks
    built before it was stored use the one with references). Groups are drawn uniformly over all folders' groups.

    Labels are ``BANK_LABEL_OFFSET + group`` (the clean operator: ``BANK_LABEL_OFFSET - 1``), so a group that comes
    back is a positive of its own keys in the MoCo queue. In a run that mixes the bank with the crop sampler, the
    clean pairs of the two sources carry different labels and count as negatives of each other (a small share)."""

    def __init__(self, folder: str | Path | Sequence[str | Path], *, crop_size: int, ops_per_batch: int,
                 images_per_op: int, reffr_share: float = 0.75, norefs_share: float = 0.0) -> None:
        folders = [folder] if isinstance(folder, (str, Path)) else list(folder)
        self.lq: list[np.ndarray] = []
        self.hq: dict[str, list[np.ndarray]] = {"reffr": [], "reffr0": [], "gt": []}
        labels = []
        for b, t in bank_shards(folders):
            for k in range(len(t["label"])):
                if min(t[f"lq_{k}"].shape[:2]) < crop_size:
                    continue
                self.lq.append(t[f"lq_{k}"])
                for key in self.hq:
                    self.hq[key].append(hq_face(t, key, k))
                labels.append(folder_label(int(t["label"][k]), b))
        self.labels = np.asarray(labels, np.int64)
        self.groups = {int(g): np.flatnonzero(self.labels == g) for g in np.unique(self.labels)}
        self.groups = {g: idx for g, idx in self.groups.items() if len(idx) >= images_per_op}
        if len(self.groups) < ops_per_batch:
            raise ValueError(f"the bank in {', '.join(map(str, folders))} has {len(self.groups)} usable groups; "
                             f"a batch needs {ops_per_batch}")
        self.crop_size, self.k, self.m, self.reffr_share = crop_size, ops_per_batch, images_per_op, reffr_share
        self.norefs_share = norefs_share

    def __len__(self) -> int:
        return len(self.lq)

    def sample_batch(self, rng: np.random.Generator):
        from .data import PairBatch

        keys = np.asarray(sorted(self.groups))
        chosen = rng.choice(keys, size=self.k, replace=False)
        s = self.crop_size
        lq, hq, labels, index = [], [], [], []
        for g in chosen:
            for j in rng.choice(self.groups[int(g)], size=self.m, replace=False):
                h, w = self.lq[j].shape[:2]
                top, left = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
                src = "reffr" if rng.random() < self.reffr_share else "gt"
                if src == "reffr" and self.norefs_share > 0 and rng.random() < self.norefs_share:
                    src = "reffr0"
                lq.append(self.lq[j][top:top + s, left:left + s])
                hq.append(self.hq[src][j][top:top + s, left:left + s])
                labels.append(BANK_LABEL_OFFSET + int(g)), index.append(int(j))
        return PairBatch(lq=np.stack(lq), hq=np.stack(hq), labels=np.asarray(labels, np.int64),
                         image_index=np.asarray(index, np.int64), ops=[int(g) for g in chosen])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m face2scene_core.fadex.photo_bank", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder of the bank shards (created)")
    ap.add_argument("--groups", type=int, default=400, help="operator groups (default 400)")
    ap.add_argument("--images-per-group", type=int, default=4, help="photos per operator (default 4)")
    ap.add_argument("--crop", type=int, default=256, help="largest side of the stored centre crops, px (default 256)")
    ap.add_argument("--families", default=json.dumps(BANK_FAMILY_WEIGHTS),
                    help="JSON of relative family weights (default: %(default)s)")
    ap.add_argument("--min-side", type=int, default=128,
                    help="smallest side of a photo's native face crop, px (default 128; e.g. 256 for a bank of large "
                         "faces, as in phone portraits)")
    ap.add_argument("--max-refs", type=int, default=2, help="references per photo: the person's other photos (default 2)")
    ap.add_argument("--source-jpeg", type=float, nargs=3, metavar=("SHARE", "Q_LO", "Q_HI"),
                    help="that share of pairs starts from the photo saved again as a JPEG of quality Q_LO..Q_HI, the "
                         "ground truth then (user photos are JPEGs already; default: the photo as it is)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.source_jpeg and not (0 < args.source_jpeg[0] <= 1 and 1 <= args.source_jpeg[1] <= args.source_jpeg[2] <= 100):
        ap.error(f"--source-jpeg needs 0 < SHARE <= 1 and 1 <= Q_LO <= Q_HI <= 100, got {args.source_jpeg}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    n = build_bank(args.out, groups=args.groups, images_per_group=args.images_per_group, crop=args.crop, seed=args.seed,
                   family_weights=json.loads(args.families), min_side=args.min_side, max_refs=args.max_refs,
                   source_jpeg=None if args.source_jpeg is None else
                   (args.source_jpeg[0], int(args.source_jpeg[1]), int(args.source_jpeg[2])))
    print(f"photo bank: {n} pairs in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
