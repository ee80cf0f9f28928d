"""Degradation as numbers: a small head on FaDeX's reading of a face pair.

    python -m face2scene_core.fadex.estimate train --config configs/estimate.yaml [--resume]
    python -m face2scene_core.fadex.estimate evaluate --weights DIR -o docs/results/estimate.json

It predicts, for the photo the face came from:

``blur_sigma``     Gaussian-equivalent blur, pixels of the photo (geometric mean of the kernel's two sigmas; 0 = none)
``motion_length``  linear motion blur length, pixels (0 = none)
``noise_sigma``    noise standard deviation in 8-bit levels, at the resolution it was added (shot noise counted at
                   mid-grey; 0 = none)
``jpeg_quality``   1-100, or none (a probability that the photo was JPEG-compressed, and the quality if so)
``scale``          the down-up factor: 1, 2 or 4

each with an uncertainty (a standard deviation for the continuous ones, learnt with a Gaussian negative
log-likelihood on ``log1p`` of the value; a probability for JPEG and scale). Labels are the parameters of the
native-scale photo operators of :mod:`~face2scene_core.degradation.families` (single stage; the Real-ESRGAN second
order and D1-D4 have no single value per parameter and are left out of training and evaluation). Inputs: FaDeX's
embedding and the channel means and standard deviations of its feature map, from (LQ face, GT face) and (LQ face,
Ref-FR face) pairs as the pipeline makes them. FaDeX stays frozen.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

CONTINUOUS = ("blur_sigma", "motion_length", "noise_sigma")
SCALES = (1, 2, 4)
PARAMS = (*CONTINUOUS, "jpeg_quality", "scale")
MIN_TRUST_SIDE = 48
"""A face whose native crop is smaller than this (pixels) gives no estimate: too few pixels to read noise or JPEG."""
HEAD_FILE = "estimate_head.safetensors"


# ------------------------------------------------------------------------------------------------ labels
def labels_of(params) -> dict[str, Any]:
    """The five numbers of a single-stage photo operator (:func:`~face2scene_core.degradation.families.photo_op`).

    Raises ValueError for a second-order operator (Real-ESRGAN, D1-D4), which has no single value per parameter."""
    from ..degradation.ops import POISSON_LEVELS

    s1, s2 = params.stage1, params.stage2
    if s2.blur is not None or s2.noise is not None or params.final_sinc is not None or s2.resize.scale != 1.0:
        raise ValueError("a second-order operator has no single value per parameter")
    blur = motion = noise = 0.0
    if s1.blur is not None:
        if s1.blur.kind == "motion":
            motion = float(s1.blur.sigma_x)
        elif s1.blur.kind in ("iso", "aniso"):
            blur = math.sqrt(float(s1.blur.sigma_x) * float(s1.blur.sigma_y or s1.blur.sigma_x))
        else:
            raise ValueError(f"blur kind {s1.blur.kind!r} has no Gaussian-equivalent sigma here")
    if s1.noise is not None:
        shot = s1.noise.poisson_scale * 255.0 * math.sqrt(0.5 / POISSON_LEVELS)
        noise = math.hypot(float(s1.noise.gaussian_sigma), shot)
    return {"blur_sigma": blur, "motion_length": motion, "noise_sigma": noise,
            "jpeg_quality": s2.jpeg_quality, "scale": int(params.scale)}


def _targets(labels: Sequence[dict]) -> dict[str, np.ndarray]:
    out = {k: np.log1p(np.asarray([lb[k] for lb in labels], np.float32)) for k in CONTINUOUS}
    q = [lb["jpeg_quality"] for lb in labels]
    out["jpeg_present"] = np.asarray([v is not None for v in q], np.float32)
    out["jpeg_quality"] = np.asarray([(v or 0) / 100.0 for v in q], np.float32)
    out["scale"] = np.asarray([SCALES.index(lb["scale"]) for lb in labels], np.int64)
    return out


def features_of(out) -> np.ndarray:
    """The head's input from a :class:`~face2scene_core.fadex.model.FaDeXOutput` of one pair: the embedding and
    the feature map's channel means and standard deviations."""
    f = out.features[0].float()
    return torch.cat([out.embedding[0].float(), f.mean((1, 2)), f.std((1, 2))]).cpu().numpy()


def pair_features(fadex, lq: np.ndarray, hq: np.ndarray) -> np.ndarray:
    """The head's input for one native face pair (uint8, same shape)."""
    return features_of(fadex.encode_pair(lq, hq))


class Estimator:
    """The head with the id of the FaDeX it reads; ``__call__(fadex_output, side)`` -> readable estimates, or a
    note instead of numbers when the face is too small to trust."""

    def __init__(self, head: EstimateHead, spec: dict):
        self.head, self.spec = head, spec

    @classmethod
    def for_fadex(cls, folder: str | Path, fadex) -> "Estimator | None":
        """The head in ``folder`` if it exists and was trained on this ``fadex`` (same weights), else ``None``."""
        from ..codes import module_id

        path = Path(folder) / HEAD_FILE
        if not path.is_file():
            return None
        head, spec = load_head(path)
        if spec.get("fadex_id") not in (None, module_id(fadex)):
            log.warning("degradation estimates off: %s was trained on FaDeX %s, not this one", path,
                        spec.get("fadex_id"))
            return None
        return cls(head, spec)

    def __call__(self, out, side: float) -> dict:
        if side < MIN_TRUST_SIDE:
            return {"untrusted": f"the face is {side:.0f} px in the photo; estimates need at least "
                                 f"{MIN_TRUST_SIDE} px"}
        return self.head.estimate(features_of(out))[0]


def describe(est: dict) -> str:
    """One line a photographer can read: ``blur 1.2 px, motion -, noise 8.5, JPEG q45, scale x2``."""
    if "untrusted" in est:
        return f"no estimate: {est['untrusted']}"
    parts = [f"blur {est['blur_sigma']['value']:.1f}+-{est['blur_sigma']['sd']:.1f} px",
             f"motion {est['motion_length']['value']:.0f}+-{est['motion_length']['sd']:.0f} px",
             f"noise {est['noise_sigma']['value']:.1f}+-{est['noise_sigma']['sd']:.1f}"]
    q = est["jpeg_quality"]
    parts.append(f"JPEG q{q['value']}" if q["value"] is not None else f"no JPEG (p {q['p_jpeg']:.2f})")
    parts.append(f"scale x{est['scale']['value']} (p {est['scale']['p']:.2f})")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------------ model
class EstimateHead(nn.Module):
    """MLP: pair features -> 3 x (mean, log variance) of log1p values, JPEG (logit, quality, log var), scale logits."""

    def __init__(self, in_dim: int, hidden: int = 256):
        super().__init__()
        self.in_dim, self.hidden = int(in_dim), int(hidden)
        self.register_buffer("mu", torch.zeros(in_dim))
        self.register_buffer("sd", torch.ones(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, hidden),
                                 nn.GELU(), nn.Linear(hidden, 2 * len(CONTINUOUS) + 3 + len(SCALES)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.net((x - self.mu) / self.sd)
        n = len(CONTINUOUS)
        return {"mean": y[:, :n], "logvar": y[:, n:2 * n].clamp(-8, 4), "jpeg_logit": y[:, 2 * n],
                "jpeg_q": y[:, 2 * n + 1], "jpeg_logvar": y[:, 2 * n + 2].clamp(-10, 2), "scale": y[:, 2 * n + 3:]}

    def loss(self, x: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
        o = self(x)
        nll = 0.5 * (o["logvar"] + (o["mean"] - t["cont"]) ** 2 / o["logvar"].exp()).mean()
        present = t["jpeg_present"]
        q_nll = 0.5 * (o["jpeg_logvar"] + (o["jpeg_q"] - t["jpeg_quality"]) ** 2 / o["jpeg_logvar"].exp())
        q_nll = (q_nll * present).sum() / present.sum().clamp(min=1)
        return nll + F.binary_cross_entropy_with_logits(o["jpeg_logit"], present) + q_nll + \
            F.cross_entropy(o["scale"], t["scale"])

    @torch.no_grad()
    def estimate(self, x: np.ndarray) -> list[dict]:
        """Readable estimates for rows of pair features: value and uncertainty per parameter."""
        self.eval()
        o = self(torch.as_tensor(np.atleast_2d(x), dtype=torch.float32))
        rows = []
        for i in range(o["mean"].shape[0]):
            r: dict[str, Any] = {}
            for j, k in enumerate(CONTINUOUS):
                m, s = float(o["mean"][i, j]), float(o["logvar"][i, j].exp().sqrt())
                value = max(math.expm1(m), 0.0)
                r[k] = {"value": round(value, 2), "sd": round((1.0 + value) * s, 2)}  # delta method
            p = float(torch.sigmoid(o["jpeg_logit"][i]))
            q = float(o["jpeg_q"][i]) * 100.0
            q_sd = float(o["jpeg_logvar"][i].exp().sqrt()) * 100.0
            r["jpeg_quality"] = {"value": int(round(min(max(q, 1), 100))) if p >= 0.5 else None,
                                 "p_jpeg": round(p, 3), "sd": round(q_sd, 1)}
            probs = torch.softmax(o["scale"][i], 0)
            k = int(probs.argmax())
            r["scale"] = {"value": SCALES[k], "p": round(float(probs[k]), 3)}
            rows.append(r)
        return rows


def save_head(head: EstimateHead, folder: Path, meta: dict) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    spec = {"in_dim": head.in_dim, "hidden": head.hidden, **meta}
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / HEAD_FILE),
              metadata={"spec": json.dumps(spec)})
    return folder / HEAD_FILE


def load_head(folder: str | Path) -> tuple[EstimateHead, dict]:
    from safetensors import safe_open

    from ..errors import WeightsNotFoundError

    path = Path(folder) / HEAD_FILE if Path(folder).is_dir() else Path(folder)
    if not path.is_file():
        raise WeightsNotFoundError(f"degradation estimate head not found: '{path}' (train it with "
                                   "`python -m face2scene_core.fadex.estimate train`)")
    with safe_open(str(path), framework="pt") as fh:
        spec = json.loads((fh.metadata() or {}).get("spec", "{}"))
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    head = EstimateHead(spec["in_dim"], spec["hidden"])
    head.load_state_dict(state)
    return head.eval(), spec


# ------------------------------------------------------------------------------------------------ training
@dataclass
class EstimateConfig:
    """``python -m face2scene_core.fadex.estimate train --config configs/estimate.yaml``.

    The pairs come from FaDeX's own training sampler (``pairs_from``: a FaDeX training config; train faces and train
    identities only), with ``family_weights`` over the single-stage photo families: GT pairs and, for
    ``reffr_prob`` of the operators, Ref-FR pairs as the pipeline makes them."""

    output_dir: str = "runs/estimate"
    fadex: str | None = None
    pairs_from: str = "configs/fadex_photo_v3.yaml"
    family_weights: dict = field(default_factory=lambda: {"clean": 0.12, "jpeg": 0.2, "noise": 0.2, "blur": 0.16,
                                                          "motion": 0.16, "downup": 0.16})
    crop_size: int = 96
    samples: int = 8000
    steps: int = 3000
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    hidden: int = 256
    seed: int = 0


def build_pairs(cfg: EstimateConfig, out: Path) -> dict[str, np.ndarray]:
    """Pair features + labels of ``cfg.samples`` pairs (cached in ``out/pairs.npz``, extended on a rerun)."""
    from ..config import load_config
    from ..degradation.families import build_degradation
    from ..training.data import resolve_path
    from ..training.stage2 import load_fadex
    from .data import FacePairSampler
    from .train import FaDeXTrainConfig, load_reffr_source, resolve_images

    cache = out / "pairs.npz"
    have: dict[str, list] = {"x": [], "labels": [], "reffr": []}
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        have = {"x": list(z["x"]), "labels": json.loads(str(z["labels"])), "reffr": list(z["reffr"])}
    fcfg = load_config(FaDeXTrainConfig, resolve_path(cfg.pairs_from), [f"seed={cfg.seed + 17 * len(have['x'])}"])
    degradation = build_degradation("photo", {"family_weights": dict(cfg.family_weights)})
    images = resolve_images(fcfg.data)
    sampler = FacePairSampler(images, crop_size=cfg.crop_size, ops_per_batch=fcfg.ops_per_batch,
                              images_per_op=fcfg.images_per_op, rescale_range=fcfg.rescale_range,
                              degradation=degradation, vary_noise_seed=True, seed=fcfg.seed,
                              **(load_reffr_source(fcfg) if fcfg.reffr_prob > 0 else {}))
    fadex = load_fadex(cfg.fadex)
    t0 = time.time()
    while len(have["x"]) < cfg.samples:
        b = sampler.sample_batch()
        m = len(b.lq) // len(b.ops)
        for i in range(len(b.lq)):
            try:
                labels = labels_of(b.ops[i // m])
            except ValueError:
                continue
            have["x"].append(pair_features(fadex, b.lq[i], b.hq[i]))
            have["labels"].append(labels)
            have["reffr"].append(bool(b.image_index[i] >= len(images)))
        if len(have["x"]) % 1000 < len(b.lq) or len(have["x"]) >= cfg.samples:
            np.savez(cache, x=np.stack(have["x"]), labels=np.asarray(json.dumps(have["labels"])),
                     reffr=np.asarray(have["reffr"]))
            log.info("pairs %d/%d (%.0f s)", len(have["x"]), cfg.samples, time.time() - t0)
    return {"x": np.stack(have["x"]).astype(np.float32), "labels": have["labels"], "reffr": np.asarray(have["reffr"])}


def train_estimate(cfg: EstimateConfig) -> Path:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = build_pairs(cfg, out)
    torch.manual_seed(cfg.seed)
    x = torch.from_numpy(pairs["x"])
    t = _targets(pairs["labels"])
    tt = {"cont": torch.from_numpy(np.stack([t[k] for k in CONTINUOUS], 1)),
          "jpeg_present": torch.from_numpy(t["jpeg_present"]), "jpeg_quality": torch.from_numpy(t["jpeg_quality"]),
          "scale": torch.from_numpy(t["scale"])}
    head = EstimateHead(x.shape[1], cfg.hidden)
    head.mu.copy_(x.mean(0))
    head.sd.copy_(x.std(0).clamp(min=1e-4))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    g = torch.Generator().manual_seed(cfg.seed)
    hist = []
    t0 = time.time()
    for step in range(cfg.steps):
        head.train()
        idx = torch.randint(0, x.shape[0], (cfg.batch_size,), generator=g)
        loss = head.loss(x[idx], {k: v[idx] for k, v in tt.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            hist.append({"step": step, "loss": round(float(loss.detach()), 4)})
    from ..codes import module_id
    from ..training.stage2 import load_fadex

    path = save_head(head, out / "final", {"fadex_id": module_id(load_fadex(cfg.fadex)), "samples": int(x.shape[0]), "reffr_share": float(pairs["reffr"].mean()),
                                           "steps": cfg.steps, "seed": cfg.seed,
                                           "train_seconds": round(time.time() - t0, 1)})
    (out / "loss_history.json").write_text(json.dumps(hist, indent=1))
    return path


# ------------------------------------------------------------------------------------------------ evaluation
def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (many labels are 0: no blur, no noise)."""
    order = np.argsort(a, kind="stable")
    r = np.empty(len(a), np.float64)
    r[order] = np.arange(len(a), dtype=np.float64)
    _, inv = np.unique(a, return_inverse=True)
    return np.bincount(inv, weights=r)[inv] / np.bincount(inv)[inv]


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return round(float(np.corrcoef(_ranks(a), _ranks(b))[0, 1]), 4)


def accuracy(estimates: Sequence[dict], labels: Sequence[dict]) -> dict:
    """Mean absolute error and rank correlation per continuous parameter; JPEG presence accuracy and quality MAE
    (where present and detected); scale accuracy."""
    res: dict[str, Any] = {}
    for k in CONTINUOUS:
        p = np.asarray([e[k]["value"] for e in estimates])
        y = np.asarray([lb[k] for lb in labels])
        res[k] = {"mae": round(float(np.abs(p - y).mean()), 3), "spearman": _spearman(p, y),
                  "label_mean": round(float(y.mean()), 3)}
    pres = np.asarray([lb["jpeg_quality"] is not None for lb in labels])
    det = np.asarray([e["jpeg_quality"]["value"] is not None for e in estimates])
    both = pres & det
    q_p = np.asarray([e["jpeg_quality"]["value"] or 0 for e in estimates], float)[both]
    q_y = np.asarray([lb["jpeg_quality"] or 0 for lb in labels], float)[both]
    res["jpeg_quality"] = {"presence_accuracy": round(float((pres == det).mean()), 3),
                           "mae": round(float(np.abs(q_p - q_y).mean()), 2) if both.any() else None,
                           "spearman": _spearman(q_p, q_y), "n_present": int(pres.sum())}
    res["scale"] = {"accuracy": round(float(np.mean([e["scale"]["value"] == lb["scale"]
                                                      for e, lb in zip(estimates, labels)])), 3)}
    return res


def evaluate(weights: str | Path, out: Path, *, n_photos: int = 16, fadex: str | None = None) -> dict:
    """Held-out photos x the single-stage grid operators: accuracy with the GT face, the Ref-FR face and the Ref-FR
    face made without references."""
    from ..degradation.families import benchmark_grid
    from ..evaluation.photos import face_pairs, select_photos
    from ..imageio import write_bytes_atomic
    from ..pipeline import Face2ScenePipeline

    head, spec = load_head(weights)
    pipe = Face2ScenePipeline.from_paths(fadex=fadex, device="cpu")
    grid = []
    for op in benchmark_grid():
        try:
            grid.append((op, labels_of(op.params)))
        except ValueError:
            pass
    rows = {"gt": ([], []), "reffr": ([], []), "reffr_norefs": ([], [])}
    for photo, op_pairs in face_pairs(pipe, select_photos(n_photos), [op for op, _ in grid]):
        for (op, lb), pairs in zip(grid, op_pairs):
            for key, (a, b) in pairs.items():
                rows[key][0].append(head.estimate(pair_features(pipe.fadex, a, b))[0])
                rows[key][1].append(lb)
    result = {"weights": str(weights), "photos": n_photos, "operators": [op.name for op, _ in grid],
              "head": spec, **{key: accuracy(*rows[key]) for key in rows}}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, json.dumps(result, indent=1).encode())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from ..config import load_config

    ap = argparse.ArgumentParser(prog="python -m face2scene_core.fadex.estimate")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--config", required=True)
    t.add_argument("overrides", nargs="*")
    e = sub.add_parser("evaluate")
    e.add_argument("--weights", required=True)
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--photos", type=int, default=16)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "train":
        print(train_estimate(load_config(EstimateConfig, args.config, args.overrides)))
    else:
        print(json.dumps(evaluate(args.weights, Path(args.output), n_photos=args.photos), indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["CONTINUOUS", "EstimateConfig", "EstimateHead", "Estimator", "describe", "features_of", "MIN_TRUST_SIDE", "PARAMS", "accuracy", "evaluate",
           "labels_of", "load_head", "pair_features", "save_head", "train_estimate"]
