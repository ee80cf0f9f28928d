"""Evaluate a Ref-FR on held-out identities with synthetic Real-ESRGAN degradations.

For every held-out identity with at least two usable photos (``configs/split.json`` "heldout_identities",
identity column of ``shared/datasets/manifest.csv``; by default the deepface ``pNN`` clusters, the
face-api.js characters and the dlib "johns"), one photo's aligned face is the ground truth (GT) and up
to ``max_refs`` other photos of the same person are the references. The GT is degraded by each operator
(the paper's presets D1-D4 plus seeded random Real-ESRGAN operators), restored, and measured:

* PSNR and SSIM on the BT.601 luma (Y) channel of the whole aligned ``512x512`` face, LQ vs GT and HQ vs GT;
* identity similarity (cosine of dlib descriptors, higher = closer), LQ vs GT and HQ vs GT. All three
  images are embedded with the *same* face box (detected once on the aligned GT), so a change in the
  score comes from the pixels, not from a different detection.

The degradation is applied to the aligned GT face itself (``512x512``; Real-ESRGAN ``x4`` operators, so
the LQ holds about a ``128 px`` face, resized back with bicubic). Summaries give the mean and a normal
95% confidence interval over faces (``metrics.mean_ci``), for LQ, HQ and the paired gain HQ - LQ.

    python -m face2scene_core.evaluation.reffr --out runs/reffr_eval
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, InputImageError
from ..faces.align import align_face
from ..faces.types import Face
from ..imageio import load_image, save_image, write_bytes_atomic
from .metrics import mean_ci, psnr, ssim
from ..reffr.base import RefFR
from ..training.data import default_datasets_dir

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPLIT = REPO_ROOT / "configs" / "split.json"
DEFAULT_SOURCES = ("deepface", "faceapi", "dlib")
"""Identity namespaces used by default: sources with several *different* photos per person
(facenet-pytorch has one photo plus its own crop per person, gfpgan one photo)."""

PRESET_NAMES = ("D1", "D2", "D3", "D4")


@dataclass
class HeldoutFace:
    """One usable photo of a held-out identity.

    Attributes:
        identity: namespaced identity, e.g. ``"deepface:p02"``.
        path: image path relative to the datasets folder.
        image: aligned face, ``uint8 (size, size, 3)`` RGB.
        face: the face detected on ``image`` (aligned coordinates), used to embed GT, LQ and HQ alike.
        embedding: identity descriptor of ``image``, ``float32 (D,)`` L2-normalised.
    """

    identity: str
    path: str
    image: np.ndarray
    face: Face
    embedding: np.ndarray


def _detect_largest(detector, image: np.ndarray) -> Face | None:
    faces = detector.detect(image)
    return max(faces, key=lambda f: f.area) if faces else None


def load_heldout_faces(
    datasets_dir: str | os.PathLike | None = None,
    split_path: str | os.PathLike | None = None,
    *,
    sources: Sequence[str] = DEFAULT_SOURCES,
    detector=None,
    embedder=None,
    size: int = 512,
    min_similarity: float = 0.9,
    max_per_identity: int | None = None,
    split_key: str = "heldout_identities",
) -> dict[str, list[HeldoutFace]]:
    """Detect, align and embed the photos of the held-out identities (or, with ``split_key``, another list).

    Args:
        datasets_dir: folder holding ``manifest.csv`` (default: :func:`default_datasets_dir`).
        split_path: the split JSON (default ``configs/split.json``); its ``heldout_identities`` are used.
        sources: identity namespaces to keep (the part before ``:``).
        detector: ``faces.get_detector()`` object (default: the shipped RetinaFace).
        embedder: ``faces.get_embedder()`` object (default: dlib).
        size: aligned face side.
        min_similarity: a photo whose identity similarity to the mean of the identity's other photos is
            below this is dropped with a log line (a wrong face was detected, e.g. in a group photo).
        max_per_identity: keep at most this many photos per identity (in manifest order); None = all.
        split_key: the list of identities read from the split (``"train_identities"`` gives the
            training identities, used by the FaDeX trainer for its Ref-FR pairs).

    Returns:
        ``{identity: [HeldoutFace, ...]}`` for identities with at least two usable photos, sorted by name.
    """
    from ..faces.detect import get_detector
    from ..faces.identity import get_embedder
    from ..faces.select import mean_embedding

    root = Path(datasets_dir) if datasets_dir is not None else default_datasets_dir()
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise InputImageError(
            f"'{manifest}' not found. Put the shared datasets beside the repository (../shared/datasets) "
            "or set FACE2SCENE_DATASETS to their folder."
        )
    split_file = Path(split_path) if split_path is not None else DEFAULT_SPLIT
    try:
        heldout = set(json.loads(split_file.read_text())[split_key])
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read '{split_key}' from '{split_file}': {exc}") from exc
    if not 0.0 <= min_similarity <= 1.0:
        raise ValueError(f"min_similarity must be in [0, 1], got {min_similarity}")
    detector = detector if detector is not None else get_detector("retinaface")
    embedder = embedder if embedder is not None else get_embedder("dlib")

    paths: dict[str, list[str]] = {}
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            ident = row["identity"]
            if ident in heldout and ident.split(":")[0] in sources and ";" not in ident:
                if row["kind"] in ("face_crop", "scene_with_faces"):
                    paths.setdefault(ident, []).append(row["path"])

    out: dict[str, list[HeldoutFace]] = {}
    for ident in sorted(paths):
        rels = paths[ident][:max_per_identity] if max_per_identity else paths[ident]
        if len(rels) < 2:
            continue
        items: list[HeldoutFace] = []
        for rel in rels:
            photo = load_image(root / rel)
            face = _detect_largest(detector, photo)
            if face is None:
                logger.info("%s: no face detected in %s; skipped", ident, rel)
                continue
            aligned = align_face(photo, face, size, min_face_size=0).image
            aface = _detect_largest(detector, aligned)
            if aface is None:
                logger.info("%s: no face detected on the aligned %s; skipped", ident, rel)
                continue
            items.append(HeldoutFace(ident, rel, aligned, aface, embedder.embed(aligned, aface)))
        keep = []
        for i, it in enumerate(items):
            others = [o.embedding for j, o in enumerate(items) if j != i]
            sim = embedder.similarity(it.embedding, mean_embedding(others)) if others else 1.0
            if sim < min_similarity:
                logger.info("%s: %s looks like another person (similarity %.3f < %.3f); skipped", ident, it.path, sim, min_similarity)
            else:
                keep.append(it)
        if len(keep) >= 2:
            out[ident] = keep
        else:
            logger.info("%s: fewer than 2 usable photos; skipped", ident)
    if not out:
        raise InputImageError(f"no identity of '{split_key}' with 2 usable photos was found under '{root}' for sources {list(sources)}")
    return out


def default_degrade_ops(n_random: int = 4, seed: int = 0) -> dict:
    """``{"D1": ..., "D4": ..., "R0": ..., "R<n_random-1>": ...}``: the presets plus seeded random operators."""
    from ..degradation import PRESETS, RealESRGANDegradation

    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    ops = {k: PRESETS[k] for k in PRESET_NAMES}
    sampler = RealESRGANDegradation()
    rng = np.random.default_rng(seed)
    for i in range(n_random):
        ops[f"R{i}"] = sampler.sample(rng)
    return ops


def _summary(values: Sequence[float]) -> dict:
    v = [x for x in values if math.isfinite(x)]
    return mean_ci(v) if v else {"mean": float("nan"), "ci95": [float("nan")] * 2, "n": 0}


def summarise(records: Sequence[dict]) -> dict:
    """Mean and 95% CI of every metric for LQ and HQ, of the paired gains, and the share of faces improved."""
    out = {}
    for metric, higher_better in (("psnr", True), ("ssim", True), ("id_sim", True)):
        lq = [r[f"lq_{metric}"] for r in records]
        hq = [r[f"hq_{metric}"] for r in records]
        gain = [h - q for h, q in zip(hq, lq)]
        out[metric] = {
            "lq": _summary(lq),
            "hq": _summary(hq),
            "gain_hq_minus_lq": _summary(gain),
            "share_improved": float(np.mean([g > 0 for g in gain])) if gain else float("nan"),
        }
    return out


def heldout_cases(
    identities: Mapping[str, Sequence[HeldoutFace]], degrade_ops: Mapping[str, object], *,
    gt_per_identity: int = 2, max_refs: int = 3,
) -> list[tuple[str, HeldoutFace, list[HeldoutFace], str]]:
    """The evaluation grid, ``(identity, GT face, reference faces, operator name)`` per case: identities
    sorted, the first ``gt_per_identity`` photos of each in turn as GT with up to ``max_refs`` of the
    others as references, every operator of ``degrade_ops`` (faces outer, operators inner)."""
    jobs = []
    for ident in sorted(identities):
        items = list(identities[ident])
        if len(items) < 2:
            raise ValueError(f"identity {ident!r} has {len(items)} photo(s); at least 2 are needed")
        for g in range(min(gt_per_identity, len(items))):
            refs = [it for j, it in enumerate(items) if j != g][:max_refs]
            for op_name in degrade_ops:
                jobs.append((ident, items[g], refs, op_name))
    return jobs


def evaluate_reffr(
    reffr: RefFR,
    identities: Mapping[str, Sequence[HeldoutFace]],
    degrade_ops: Mapping[str, object],
    *,
    embedder=None,
    gt_per_identity: int = 2,
    max_refs: int = 3,
    examples_dir: str | os.PathLike | None = None,
    max_examples: int = 24,
    progress: bool = True,
    fadex=None,
) -> dict:
    """Degrade, restore and measure every (GT face, operator) case.

    Args:
        reffr: the restorer under test.
        identities: ``{identity: [HeldoutFace, ...]}`` from :func:`load_heldout_faces` (>= 2 photos each).
        degrade_ops: ``{name: DegradationParams}`` (e.g. :func:`default_degrade_ops`).
        embedder: identity embedder (default dlib); must be the one that embedded ``identities``.
        gt_per_identity: photos of each identity used in turn as GT (the first ones); the others are references.
        max_refs: at most this many references per case (the first other photos).
        examples_dir: if set, writes ``<identity>_<gt>_<op>.png`` strips (LQ | HQ | GT) there, for at most
            ``max_examples`` cases spread evenly over the run.
        progress: show a tqdm bar.
        fadex: optional :class:`~face2scene_core.fadex.model.FaDeX`. Every case's pair is then embedded
            twice, as (LQ, GT face) and as (LQ, Ref-FR output), and ``fadex_retrieval`` reports, for each
            HQ source, the paper's Fig. 3 statistics and top-1 operator retrieval over the grid of GT
            faces x operators (presets D*, the random operators R*, and all of them together): does
            the degradation code still name the operator when the HQ face comes from the Ref-FR
            instead of the ground truth?

    Returns:
        ``{"restorer", "cases": [...], "summary": {...}, "per_op": {op: summary}, "per_source": {...}, "settings"}``;
        each case has ``identity, gt, refs, op, lq_psnr, hq_psnr, lq_ssim, hq_ssim, lq_id_sim, hq_id_sim, seconds``.
    """
    from ..degradation import degrade_image
    from ..faces.identity import get_embedder

    if gt_per_identity < 1:
        raise ValueError(f"gt_per_identity must be >= 1, got {gt_per_identity}")
    if max_refs < 0:
        raise ValueError(f"max_refs must be >= 0, got {max_refs}")
    if not degrade_ops:
        raise ValueError("degrade_ops is empty; pass at least one operator (see default_degrade_ops)")
    embedder = embedder if embedder is not None else get_embedder("dlib")
    jobs = heldout_cases(identities, degrade_ops, gt_per_identity=gt_per_identity, max_refs=max_refs)

    every = max(1, math.ceil(len(jobs) / max_examples)) if max_examples > 0 else 0
    records: list[dict] = []
    emb_gt: list[np.ndarray] = []
    emb_hq: list[np.ndarray] = []
    for n, (ident, gt, refs, op_name) in enumerate(tqdm(jobs, desc=f"evaluating {reffr.name}", disable=not progress)):
        lq = degrade_image(gt.image, degrade_ops[op_name])
        t0 = time.perf_counter()
        hq = reffr.restore(lq, [r.image for r in refs])
        seconds = time.perf_counter() - t0
        rec = {
            "identity": ident,
            "gt": gt.path,
            "refs": [r.path for r in refs],
            "op": op_name,
            "lq_psnr": psnr(lq, gt.image),
            "hq_psnr": psnr(hq, gt.image),
            "lq_ssim": ssim(lq, gt.image),
            "hq_ssim": ssim(hq, gt.image),
            "lq_id_sim": embedder.similarity(embedder.embed(lq, gt.face), gt.embedding),
            "hq_id_sim": embedder.similarity(embedder.embed(hq, gt.face), gt.embedding),
            "seconds": seconds,
        }
        if fadex is not None:
            emb_gt.append(fadex.encode_pair(lq, gt.image).embedding[0].float().cpu().numpy())
            emb_hq.append(fadex.encode_pair(lq, hq).embedding[0].float().cpu().numpy())
        records.append(rec)
        if examples_dir is not None and every and n % every == 0:
            stem = f"{ident.replace(':', '_')}_{Path(gt.path).stem}_{op_name}.png"
            save_image(Path(examples_dir) / stem, np.concatenate([lq, hq, gt.image], axis=1))
    per_op = {op: summarise([r for r in records if r["op"] == op]) for op in degrade_ops}
    sources = sorted({r["identity"].split(":")[0] for r in records})
    per_source = {s: summarise([r for r in records if r["identity"].startswith(s + ":")]) for s in sources}
    report = {
        "restorer": repr(reffr),
        "metrics": "PSNR/SSIM on Y (BT.601) of the whole aligned face; id_sim = cosine of identity descriptors vs GT",
        "summary": summarise(records),
        "per_op": per_op,
        "per_source": per_source,
        "seconds_per_face": _summary([r["seconds"] for r in records]),
        "settings": {
            "identities": {k: [it.path for it in v] for k, v in identities.items()},
            "ops": {k: (v.to_dict() if hasattr(v, "to_dict") else str(v)) for k, v in degrade_ops.items()},
            "gt_per_identity": gt_per_identity,
            "max_refs": max_refs,
            "embedder": getattr(embedder, "name", type(embedder).__name__),
        },
        "cases": records,
    }
    if fadex is not None:
        report["fadex_retrieval"] = fadex_retrieval(list(degrade_ops), {"gt_hq": emb_gt, "reffr_hq": emb_hq})
    return report


def fadex_retrieval(op_names: Sequence[str], embeddings: Mapping[str, Sequence[np.ndarray]]) -> dict:
    """Fig. 3 statistics and top-1 operator retrieval per HQ source, on the (face x operator) grid.

    ``embeddings[source]`` lists one embedding per case, faces outer and ``op_names`` inner (the
    order :func:`evaluate_reffr` runs them). Operator subsets: ``presets`` (names starting with
    ``D``), ``random`` (``R``) and ``all``; a subset with fewer than 2 operators is left out.
    """
    from .fadex import similarity_stats

    p = len(op_names)
    subsets = {"presets": [i for i, n in enumerate(op_names) if n.startswith("D")],
               "random": [i for i, n in enumerate(op_names) if n.startswith("R")],
               "all": list(range(p))}
    out: dict = {}
    for source, embs in embeddings.items():
        if len(embs) % p:
            raise ValueError(f"{source}: {len(embs)} embeddings do not form a (faces x {p} operators) grid")
        grid = np.stack(embs).reshape(len(embs) // p, p, -1)
        if grid.shape[0] < 2:
            out[source] = {"note": "fewer than 2 GT faces: retrieval needs at least 2"}
            continue
        out[source] = {}
        for name, idx in subsets.items():
            if len(idx) >= 2:
                st = similarity_stats(grid[:, idx])
                out[source][name] = {k: v for k, v in st.items()
                                     if not k.startswith("_") and k not in ("matrix", "top1_per_operator")}
                if name == "all":
                    out[source]["per_operator_top1"] = dict(zip(op_names, st["top1_per_operator"]))
    if {"gt_hq", "reffr_hq"} <= set(embeddings) and "note" not in out["gt_hq"]:
        out["cross"] = _cross_retrieval(op_names, embeddings["reffr_hq"], embeddings["gt_hq"])
    return out


def _cross_retrieval(op_names: Sequence[str], queries: Sequence[np.ndarray], gallery: Sequence[np.ndarray]) -> dict:
    """Top-1 operator retrieval of each query among the gallery codes of the *other* faces.

    This is the question the restorer asks: it learnt its tokens from (LQ, GT face) codes, so a Ref-FR
    code is useful when its nearest GT code carries the same operator. The same face is excluded from
    the gallery (its GT is never available at inference); ``gt_to_gt`` is the same protocol with GT
    queries, for reference.
    """
    p = len(op_names)
    g = np.stack(gallery).reshape(-1, p, np.asarray(gallery[0]).shape[-1]).astype(np.float64)
    n = g.shape[0]

    def top1(q: np.ndarray) -> tuple[float, dict]:
        q = q.reshape(n, p, -1).astype(np.float64)
        hits = np.zeros((n, p), dtype=bool)
        for f in range(n):
            others = np.delete(g, f, axis=0).reshape(-1, g.shape[-1])  # (n-1)*p, D; row = face * p + op
            nearest = (q[f] @ others.T).argmax(axis=1) % p
            hits[f] = nearest == np.arange(p)
        return float(hits.mean()), {name: float(hits[:, i].mean()) for i, name in enumerate(op_names)}

    r_all, r_per = top1(np.stack(queries))
    g_all, g_per = top1(g)
    return {"reffr_to_gt_top1": r_all, "reffr_to_gt_per_operator": r_per, "gt_to_gt_top1": g_all,
            "gt_to_gt_per_operator": g_per, "chance_top1": 1.0 / p}


def _format(report: dict) -> str:
    lines = [f"{report['restorer']}: {len(report['cases'])} cases"]
    for metric, s in report["summary"].items():
        g = s["gain_hq_minus_lq"]
        lines.append(
            f"  {metric:6s} LQ {s['lq']['mean']:.4f}  HQ {s['hq']['mean']:.4f}  gain {g['mean']:+.4f} "
            f"[{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}]  improved {100 * s['share_improved']:.0f}%"
        )
    for source, sets in report.get("fadex_retrieval", {}).items():
        if source == "cross":
            lines.append(f"  FaDeX Ref-FR code -> nearest GT code of another face: top-1 {100 * sets['reffr_to_gt_top1']:.1f}% "
                         f"(GT -> GT {100 * sets['gt_to_gt_top1']:.1f}%), per operator {sets['reffr_to_gt_per_operator']}")
            continue
        lines.append(f"  FaDeX with {source}: " + ", ".join(
            f"{k} top-1 {100 * v['top1_accuracy']:.1f}% gap {v['gap']:.3f}" if isinstance(v, dict) and "gap" in v else
            f"{k} {v}" for k, v in sets.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from ..reffr import EMBEDDED_REFINER_DIR
    from ..reffr.transfer import ReferenceTransferRefFR

    ap = argparse.ArgumentParser(prog="python -m face2scene_core.evaluation.reffr", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (report.json, and examples/ with --examples)")
    ap.add_argument("--datasets", default=None, help="shared datasets folder (default ../shared/datasets or $FACE2SCENE_DATASETS)")
    ap.add_argument("--split", default=None, help="split JSON (default configs/split.json)")
    ap.add_argument("--sources", default=",".join(DEFAULT_SOURCES), help="identity namespaces, comma-separated (default %(default)s)")
    ap.add_argument("--n-random", type=int, default=4, help="random Real-ESRGAN operators besides D1-D4 (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random operators (default %(default)s)")
    ap.add_argument("--gt-per-identity", type=int, default=2, help="photos per identity used as GT in turn (default %(default)s)")
    ap.add_argument("--max-refs", type=int, default=3, help="references per case (default %(default)s)")
    ap.add_argument("--no-refs-baseline", action="store_true", help="also run the restorer without references")
    ap.add_argument("--size", type=int, default=512, help="aligned face side, px (default %(default)s)")
    ap.add_argument("--fadex", default=None, metavar="DIR",
                    help="FaDeX weights folder for the operator-retrieval check (default: the embedded FaDeX; 'none' skips it)")
    ap.add_argument("--refiner", default=None, metavar="DIR",
                    help="RefineNet weights folder run after the reference transfer (default: the embedded refiner; "
                         "'none' evaluates the transfer alone)")
    ap.add_argument("--examples", type=int, default=0, metavar="N", help="save N LQ|HQ|GT strips under OUT/examples (default 0)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    out = Path(args.out)
    sources = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    ids = load_heldout_faces(args.datasets, args.split, sources=sources, size=args.size)
    ops = default_degrade_ops(args.n_random, args.seed)
    if (args.refiner or "").lower() == "none":
        reffr = ReferenceTransferRefFR.for_size(args.size)
    else:
        from ..reffr.refine import RefinedRefFR

        reffr = RefinedRefFR.from_pretrained(args.refiner or EMBEDDED_REFINER_DIR, size=args.size)
    fadex = None
    if (args.fadex or "").lower() != "none":
        from ..fadex.model import FaDeX
        from ..pipeline import EMBEDDED_DIR

        fadex_dir = Path(args.fadex) if args.fadex else EMBEDDED_DIR / "fadex"
        if not (fadex_dir / "config.json").is_file():
            raise ConfigError(f"no FaDeX weights in '{fadex_dir}' (config.json + safetensors expected); pass --fadex DIR or --fadex none")
        fadex = FaDeX.from_pretrained(str(fadex_dir), use_safetensors=True).eval()
    report = evaluate_reffr(
        reffr, ids, ops, gt_per_identity=args.gt_per_identity, max_refs=args.max_refs,
        examples_dir=out / "examples" if args.examples > 0 else None, max_examples=args.examples, fadex=fadex,
    )
    reports = {"with_references": report}
    if args.no_refs_baseline:
        reports["without_references"] = evaluate_reffr(reffr, ids, ops, gt_per_identity=args.gt_per_identity, max_refs=0)
    write_bytes_atomic(out / "report.json", json.dumps(reports, indent=1).encode())
    for name, rep in reports.items():
        logger.info("%s\n%s", name, _format(rep))
    logger.info("wrote %s", out / "report.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
