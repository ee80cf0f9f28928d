"""Train :class:`~face2scene_core.reffr.refine.RefineNet`, the learned stage of the offline Ref-FR.

Data (nothing held out is used): the aligned photos of the split's ``train_identities`` (each degraded
whole by random Real-ESRGAN operators and restored by the reference transfer from the person's *other*
photos, as at inference) and the FFHQ training faces (no other photo of the person: the transfer's
no-reference path). Every (LQ, transfer output, GT) triplet is made once, into ``<output_dir>/pool_<size>.npz``
(rebuilt if its settings change), then the net learns ``GT - transfer output`` from random crops with
an L1 loss.

    python -m face2scene_core.reffr.train_refine --config configs/reffr_refine.yaml [--resume] [key=value ...]

Checkpoints (safetensors + JSON) every ``checkpoint_every`` steps under ``<output_dir>/checkpoints``;
``--resume`` continues from the newest one with the same data order. The final weights go to
``<output_dir>/final`` (``RefineNet.from_pretrained`` folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..config import load_config, to_dict
from ..degradation import DegradationConfig
from ..errors import ConfigError
from ..fadex.train import _help, check_resumable, load_optimizer, save_optimizer
from ..imageio import load_image, write_bytes_atomic
from ..training.data import expand_images
from .refine import RefineNet
from .transfer import ReferenceTransferRefFR

logger = logging.getLogger(__name__)


@dataclass
class RefineTrainConfig:
    """Settings of a refiner run (``configs/reffr_refine.yaml`` holds the shipped run's)."""

    output_dir: str = _help("run folder (pool, checkpoints, metrics.jsonl, final/)", default="runs/reffr_refine")
    sizes: list[int] = _help("aligned face sides the pool is made at (the Ref-FR runs at 512 in the pipeline, "
                             "256 in parts of the evaluation)", default_factory=lambda: [256, 512])
    ffhq: list[str] = _help("glob patterns of FFHQ-aligned training faces (no references; used at 256 px only)",
                            default_factory=list)
    split: str = _help("split JSON whose train_identities give the faces with references", default="configs/split.json")
    ops_per_face: int = _help("random operators per identity face (per size)", default=8)
    ops_per_ffhq: int = _help("random operators per FFHQ face", default=2)
    max_refs: int = _help("references per identity face (its other photos)", default=3)
    light_prob: float = _help("share of cases degraded by a light operator (x2, mild blur / noise / JPEG: "
                              "LIGHT_DEGRADATION) instead of the Real-ESRGAN x4 one, so nearly clean faces "
                              "are left alone", default=0.0)
    operators: str = _help("operator sampler of the pool: 'realesrgan' (random Real-ESRGAN x4, with light_prob) or "
                           "'photo' (the native-scale photo families of degradation/families.py, clean included: "
                           "a clean face must come back as it is)", default="realesrgan")
    degradation: dict = _help("overrides of the sampler's config (e.g. family_weights for 'photo')", default_factory=dict)
    init: str = _help("start from this RefineNet folder (e.g. face2scene_core/weights/reffr_refine) instead of "
                      "random weights; its widths win over channels / blocks", default="")
    channels: list[int] = _help("RefineNet widths at 1/2 and 1/4 size", default_factory=lambda: [48, 96])
    blocks: list[int] = _help("RefineNet residual blocks per level", default_factory=lambda: [2, 4])
    crop_size: int = _help("training crop side, px (multiple of 4)", default=128)
    batch_size: int = _help("crops per step", default=16)
    steps: int = _help("optimiser steps", default=2000)
    lr: float = _help("Adam learning rate (cosine decay to 10%)", default=3e-4)
    seed: int = _help("seed of operators, crops and initial weights", default=0)
    checkpoint_every: int = _help("steps between checkpoints", default=250)
    log_every: int = _help("steps between metrics.jsonl lines", default=25)
    num_threads: int = _help("torch CPU threads (0 = torch's default)", default=0)


#: Config keys that may change between a run and its ``--resume`` (anything else would not continue the same run).
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "log_every", "output_dir", "num_threads"}

# ------------------------------------------------------------------------------------------------ pool

#: The light operator of ``light_prob``: x2 instead of x4, mild blur, little noise, high JPEG quality.
LIGHT_DEGRADATION = DegradationConfig(
    scale=2, blur_sigma=(0.2, 1.0), blur_sigma2=(0.2, 0.8), noise_range=(1.0, 6.0), noise_range2=(1.0, 5.0),
    poisson_scale_range=(0.05, 0.5), poisson_scale_range2=(0.05, 0.5), jpeg_range=(70.0, 95.0),
    jpeg_range2=(70.0, 95.0), resize_range=(0.6, 1.2), resize_range2=(0.7, 1.2),
)


def _pool_key(cfg: RefineTrainConfig, size: int) -> str:
    keys = {"size": size, "ffhq": cfg.ffhq, "split": cfg.split, "ops_per_face": cfg.ops_per_face,
            "ops_per_ffhq": cfg.ops_per_ffhq, "max_refs": cfg.max_refs, "seed": cfg.seed}
    if cfg.light_prob:
        keys["light_prob"] = cfg.light_prob
    if cfg.operators != "realesrgan" or cfg.degradation:
        keys["operators"], keys["degradation"] = cfg.operators, cfg.degradation
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def build_pool(cfg: RefineTrainConfig, size: int, *, progress: bool = True) -> dict[str, np.ndarray]:
    """``{"lq", "hq", "gt"}``: ``uint8 (N, size, size, 3)`` triplets (see the module doc)."""
    from tqdm.auto import tqdm

    from ..degradation import RealESRGANDegradation, degrade_image
    from ..degradation.families import build_degradation
    from ..evaluation.reffr import load_heldout_faces

    rng = np.random.default_rng([cfg.seed, size])
    deg, light = build_degradation(cfg.operators, cfg.degradation), RealESRGANDegradation(LIGHT_DEGRADATION)
    reffr = ReferenceTransferRefFR.for_size(size)
    jobs: list[tuple[np.ndarray, list[np.ndarray]]] = []
    ids = load_heldout_faces(split_path=cfg.split, size=size, split_key="train_identities")
    for _, faces in sorted(ids.items()):
        for j, face in enumerate(faces):
            refs = [f.image for r, f in enumerate(faces) if r != j][: cfg.max_refs]
            jobs += [(face.image, refs)] * cfg.ops_per_face
    n_id = len(jobs)
    if size == 256:
        for pattern in cfg.ffhq:
            for path in expand_images([pattern]):
                img = load_image(path)
                if img.shape[:2] != (size, size):
                    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
                jobs += [(img, [])] * cfg.ops_per_ffhq
    if not jobs:
        raise ConfigError("the refiner pool is empty: no train identities in the split and no FFHQ faces matched")
    logger.info("refiner pool at %d px: %d identity cases, %d FFHQ cases", size, n_id, len(jobs) - n_id)
    out = {k: np.empty((len(jobs), size, size, 3), np.uint8) for k in ("lq", "hq", "gt")}
    transfer_log = logging.getLogger(ReferenceTransferRefFR.__module__)
    level = transfer_log.level
    transfer_log.setLevel(logging.WARNING)  # the no-reference path logs once per face otherwise
    try:
        for n, (gt, refs) in enumerate(tqdm(jobs, desc=f"refiner pool {size}px", disable=not progress)):
            op = light.sample(rng) if cfg.light_prob and rng.random() < cfg.light_prob else deg.sample(rng)
            lq = degrade_image(gt, op)
            out["lq"][n], out["gt"][n] = lq, gt
            out["hq"][n] = reffr.restore_with_info(lq, refs)[0]
    finally:
        transfer_log.setLevel(level)
    return out


def load_or_build_pool(cfg: RefineTrainConfig, size: int) -> dict[str, np.ndarray]:
    path = Path(cfg.output_dir) / f"pool_{size}.npz"
    key = _pool_key(cfg, size)
    if path.is_file():
        with np.load(path) as z:
            if str(z["key"]) == key:
                return {k: z[k] for k in ("lq", "hq", "gt")}
        logger.info("%s was made with other settings; rebuilding it", path)
    pool = build_pool(cfg, size)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, key=np.array(key), **pool)
    os.replace(tmp, path)
    return pool


# ------------------------------------------------------------------------------------------------ train


def _sample(pools: list[dict[str, np.ndarray]], rng: np.random.Generator, crop: int, batch: int) -> torch.Tensor:
    """``float (3, B, 3, crop, crop)``: LQ, transfer output and GT crops, same boxes, random flips."""
    sizes = np.array([len(p["lq"]) for p in pools], dtype=np.float64)
    out = np.empty((3, batch, crop, crop, 3), np.uint8)
    for b in range(batch):
        p = pools[int(rng.choice(len(pools), p=sizes / sizes.sum()))]
        i = int(rng.integers(len(p["lq"])))
        s = p["lq"].shape[1]
        y, x = int(rng.integers(s - crop + 1)), int(rng.integers(s - crop + 1))
        flip = bool(rng.random() < 0.5)
        for k, name in enumerate(("lq", "hq", "gt")):
            a = p[name][i, y : y + crop, x : x + crop]
            out[k, b] = a[:, ::-1] if flip else a
    return torch.from_numpy(out).permute(0, 1, 4, 2, 3).float() / 255.0


def _save(path: Path, net: RefineNet, opt: torch.optim.Optimizer, step: int, rng: np.random.Generator, cfg: RefineTrainConfig) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    net.save_pretrained(tmp / "model", safe_serialization=True)
    save_optimizer(tmp / "optimizer.safetensors", opt)
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "rng": rng.bit_generator.state, "config": to_dict(cfg)}))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _checkpoints(out: Path) -> list[Path]:
    root = out / "checkpoints"
    found = [p for p in root.glob("step_*") if (p / "trainer_state.json").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def lr_at(cfg: RefineTrainConfig, step: int) -> float:
    """Cosine decay from ``lr`` to ``lr / 10`` over the run."""
    return cfg.lr * (0.1 + 0.45 * (1 + float(np.cos(np.pi * min(step, cfg.steps) / cfg.steps))))


def train_refine(cfg: RefineTrainConfig, resume: bool = False) -> Path:
    """Build the pools, train, write ``<output_dir>/final``; returns that folder."""
    if cfg.crop_size % 4 or cfg.crop_size < 32:
        raise ConfigError(f"crop_size must be a multiple of 4 and >= 32, got {cfg.crop_size}")
    if any(s < cfg.crop_size for s in cfg.sizes):
        raise ConfigError(f"every size in {cfg.sizes} must be >= crop_size {cfg.crop_size}")
    out = Path(cfg.output_dir)
    if _checkpoints(out) and not resume:
        raise ConfigError(f"'{out}' already holds checkpoints; pass --resume to continue or choose another output_dir")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    pools = [load_or_build_pool(cfg, s) for s in cfg.sizes]
    rng = np.random.default_rng(cfg.seed)
    step = 0
    ckpts = _checkpoints(out) if resume else []
    if ckpts:
        last = ckpts[-1]
        state = json.loads((last / "trainer_state.json").read_text())
        check_resumable(last, state["config"], to_dict(cfg), RESUMABLE_CHANGES)
        net = RefineNet.from_pretrained(str(last / "model"), use_safetensors=True)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        load_optimizer(last / "optimizer.safetensors", opt)
        step = int(state["step"])
        rng.bit_generator.state = state["rng"]
        logger.info("resumed from %s (step %d)", last, step)
    elif cfg.init:
        torch.manual_seed(cfg.seed)
        net = RefineNet.from_pretrained(cfg.init, use_safetensors=True)
        logger.info("initialised from %s", cfg.init)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    else:
        torch.manual_seed(cfg.seed)
        net = RefineNet(channels=tuple(cfg.channels), blocks=tuple(cfg.blocks))
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    net.train()
    metrics = out / "metrics.jsonl"
    if metrics.exists():  # keep the rows up to the step the run restarts from
        rows = [line for line in metrics.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_bytes_atomic(metrics, "".join(r + "\n" for r in rows).encode())
    acc = {"l1": 0.0, "l1_input": 0.0, "n": 0}
    t0 = time.time()
    while step < cfg.steps:
        lr = lr_at(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        lq, hq, gt = _sample(pools, rng, cfg.crop_size, cfg.batch_size)
        pred = net(lq, hq)
        loss = (pred - gt).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        acc["l1"] += loss.item()
        acc["l1_input"] += float((hq - gt).abs().mean())
        acc["n"] += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {"step": step, "l1": acc["l1"] / acc["n"], "l1_transfer": acc["l1_input"] / acc["n"],
                   "lr": lr, "s_per_step": (time.time() - t0) / acc["n"]}
            with metrics.open("a") as f:
                f.write(json.dumps(row) + "\n")
            logger.info("step %d  l1 %.5f (transfer output %.5f)  %.2f s/step", step, row["l1"], row["l1_transfer"], row["s_per_step"])
            acc = {"l1": 0.0, "l1_input": 0.0, "n": 0}
            t0 = time.time()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _save(out / "checkpoints" / f"step_{step:06d}", net, opt, step, rng, cfg)
    final = out / "final"
    tmp = out / ".final.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    net.eval().save_pretrained(tmp, safe_serialization=True)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_bytes_atomic(final / "training.json", json.dumps({"config": to_dict(cfg), "steps": step}, indent=1).encode())
    return final


def main(argv: list[str] | None = None) -> int:
    fields = "\n".join(f"  {f.name}: {f.metadata.get('help', '')}" for f in dataclasses.fields(RefineTrainConfig))
    ap = argparse.ArgumentParser(prog="python -m face2scene_core.reffr.train_refine", description=__doc__.split("\n\n")[0],
                                 epilog="config keys (override with key=value):\n" + fields,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML/JSON config (configs/reffr_refine.yaml)")
    ap.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=500")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        final = train_refine(load_config(RefineTrainConfig, args.config, args.overrides), resume=args.resume)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("done: %s", final)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
