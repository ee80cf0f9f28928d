"""Contrastive training of FaDeX (Face2Scene Stage II), resumable, single device.

    python -m face2scene_core.fadex --config configs/fadex_default.yaml [--resume] [key=value ...]

or from Python: ``train_fadex(load_config(FaDeXTrainConfig, path), resume=True)``.

Output folder layout::

    <output_dir>/config.json                 the config of the run (and the seed)
    <output_dir>/metrics.jsonl               one JSON line every ``log_every`` steps
    <output_dir>/checkpoints/step_0000500/   encoder/ and key_encoder/ (save_pretrained, safetensors),
                                             state.safetensors (queue), optimizer.safetensors (Adam,
                                             flattened), trainer_state.json (step, data generator state)
    <output_dir>/final/                      the trained (query) encoder: FaDeX.from_pretrained(...)
    <output_dir>/eval/                       fadex_eval.json/png when ``eval_data`` is set

Checkpoints are written to a temporary folder and renamed, so a crash never leaves a half-written
one; ``resume=True`` continues from the newest one exactly (same weights, queue, optimizer state and
data stream as an uninterrupted run). Nothing is pickled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..config import load_config, to_dict
from ..errors import ConfigError, InputImageError
from ..imageio import write_bytes_atomic
from .data import FacePairSampler, HQFn
from .model import FaDeX
from .moco import MoCoFaDeX, multi_positive_info_nce

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # what ModelMixin.save_pretrained writes
CHECKPOINT_RE = re.compile(r"^step_(\d+)$")
# Keys that may change between a run and its resumption without breaking exactness.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "log_every", "output_dir", "eval_data", "eval_random_ops", "device"}


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass
class FaDeXTrainConfig:
    """Training settings. Defaults are the paper's values (or DESIGN.md's where the paper lost them)."""

    data: list[str] = _help("glob patterns of clean face images (relative to the working directory)", default_factory=list)
    crop_size: int = _help("side of the square training crops, px (>= 32)", default=128)
    rescale_range: tuple[float, float] = _help("clean-image downscale factor range before cropping", default=(0.5, 1.0))
    ops_per_batch: int = _help("K: degradation operators per batch", default=5)
    images_per_op: int = _help("M: different images per operator (batch = K*M; paper batch 20)", default=4)
    preset_prob: float = _help("probability that an operator is one of the presets D1-D4", default=0.0)
    op_pool_size: int = _help("0: fresh random operator each time; n: draw from n fixed operators", default=0)
    vary_noise_seed: bool = _help("own noise realisation per crop (same operator statistics)", default=True)
    shared_content_prob: float = _help("probability that a batch applies all K operators to the same M crops "
                                       "(same-content / different-operator negatives)", default=0.0)
    reffr_prob: float = _help("probability per operator group of Ref-FR pairs (aligned train-identity faces "
                              "restored by the offline Ref-FR from the person's other photos)", default=0.0)
    reffr_size: int = _help("aligned face side of the Ref-FR pairs, px", default=256)
    reffr_sources: list[str] = _help("identity namespaces of the split's train_identities used for Ref-FR pairs",
                                     default_factory=lambda: ["deepface", "faceapi", "dlib"])
    reffr_split: str = _help("split JSON whose train_identities give the Ref-FR faces", default="configs/split.json")
    reffr_max_refs: int = _help("references per Ref-FR pair", default=2)
    reffr_refiner: str = _help("RefineNet folder applied after the reference transfer for the Ref-FR pairs, as the "
                               "pipeline does ('' = the transfer alone, as FaDeX v1/v2 were trained; 'embedded' = "
                               "face2scene_core/weights/reffr_refine)", default="")
    reffr_share: float = _help("fraction of a Ref-FR group made of Ref-FR pairs; the rest are GT pairs of the same "
                               "operator (1.0: Ref-FR pairs only)", default=0.5)
    bank_norefs_share: float = _help("of the photo bank's Ref-FR pairs, the fraction whose Ref-FR face was made "
                                     "without references (the same operator and photo; a bank built before that face "
                                     "was stored gives the one with references)", default=0.0)
    photo_bank: str | list[str] = _help("folder of a photo bank (python -m face2scene_core.fadex.photo_bank), or a list "
                                        "of them: face pairs made the way the pipeline makes them, from whole train "
                                        "photos degraded at native scale", default="")
    photo_bank_prob: float = _help("probability that a batch comes from photo_bank (its K groups x M pairs; "
                                   "reffr_share of them with the Ref-FR face as HQ) instead of the crop sampler",
                                   default=0.0)
    degradation: dict[str, Any] = _help("overrides of DegradationConfig fields (operators: realesrgan), or of "
                                        "PhotoDegradationConfig fields (operators: photo)", default_factory=dict)
    operators: str = _help("operator distribution: 'realesrgan' (Real-ESRGAN x4 second order) or 'photo' (the "
                           "native-scale families of degradation.families, mild to heavy, with clean photos)",
                           default="realesrgan")
    channels: tuple[int, ...] = _help("FaDeX stage widths", default=(64, 128, 256))
    blocks_per_stage: tuple[int, ...] = _help("FaDeX Conv-BN-LeakyReLU blocks per stage", default=(2, 2, 2))
    embed_dim: int = _help("embedding size (paper: 256)", default=256)
    proj_hidden: int = _help("projection head hidden width", default=512)
    steps: int = _help("optimizer steps (paper: 200 epochs at batch 20)", default=20000)
    lr: float = _help("Adam learning rate (1e-4)", default=1e-4)
    weight_decay: float = _help("Adam weight decay", default=0.0)
    temperature: float = _help("InfoNCE temperature tau (0.07)", default=0.07)
    momentum: float = _help("key-encoder EMA momentum (0.999)", default=0.999)
    queue_size: int = _help("FIFO queue of key embeddings (4096; smaller on CPU)", default=4096)
    seed: int = _help("seed of the weights init and of the data stream", default=0)
    init: str = _help("start from this FaDeX folder (e.g. face2scene_core/weights/fadex; 'embedded' = that one) "
                      "instead of random weights; its architecture must match channels / blocks / embed_dim",
                      default="")
    output_dir: str = _help("run folder", default="runs/fadex")
    checkpoint_every: int = _help("steps between checkpoints (a final one is always written)", default=500)
    keep_checkpoints: int = _help("newest checkpoints kept (0 = all)", default=2)
    log_every: int = _help("steps between metrics.jsonl lines", default=10)
    bf16: bool = _help("bf16 autocast (CPU or GPU); weights and loss stay fp32", default=False)
    device: str = _help("'auto' (cuda if present, else cpu), 'cpu', 'cuda', 'cuda:1'...", default="auto")
    eval_data: list[str] = _help("glob patterns of held-out faces to run evaluate_fadex on at the end", default_factory=list)
    eval_random_ops: int = _help("random Real-ESRGAN operators in the final evaluation", default=8)

    def __post_init__(self) -> None:
        checks = {
            "crop_size": self.crop_size >= 32,
            "ops_per_batch": self.ops_per_batch >= 1,
            "images_per_op": self.images_per_op >= 1,
            "steps": self.steps >= 1,
            "lr": self.lr > 0,
            "temperature": self.temperature > 0,
            "momentum": 0.0 <= self.momentum <= 1.0,
            "queue_size": self.queue_size >= 1,
            "checkpoint_every": self.checkpoint_every >= 1,
            "keep_checkpoints": self.keep_checkpoints >= 0,
            "log_every": self.log_every >= 1,
            "preset_prob": 0.0 <= self.preset_prob <= 1.0,
            "op_pool_size": self.op_pool_size >= 0,
            "shared_content_prob": 0.0 <= self.shared_content_prob <= 1.0,
            "reffr_prob": 0.0 <= self.reffr_prob <= 1.0,
            "reffr_size": self.reffr_size >= 64 and self.reffr_size >= self.crop_size,
            "reffr_max_refs": self.reffr_max_refs >= 1,
            "reffr_share": 0.0 < self.reffr_share <= 1.0,
            "bank_norefs_share": 0.0 <= self.bank_norefs_share <= 1.0,
            "photo_bank_prob": 0.0 <= self.photo_bank_prob <= 1.0 and (self.photo_bank_prob == 0 or bool(self.photo_bank)),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid FaDeX training value(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")

    def model_kwargs(self) -> dict:
        return {
            "channels": tuple(self.channels),
            "blocks_per_stage": tuple(self.blocks_per_stage),
            "embed_dim": self.embed_dim,
            "proj_hidden": self.proj_hidden,
        }


def resolve_images(patterns: list[str]) -> list[Path]:
    """Expand glob patterns (``~`` and ``$VARS`` too; see :func:`training.data.expand_images`) to sorted, unique
    image files.

    Raises :class:`ConfigError` when a pattern matches no image (so a typo never trains on less data).
    """
    from ..training.data import expand_images

    found: set[Path] = set()
    for pat in patterns:
        hits = expand_images([pat])
        if not hits:
            raise ConfigError(f"data pattern '{pat}' matches no image (relative to '{Path.cwd()}'). Fix the path.")
        found.update(hits)
    return sorted(found)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors, extra = {}, {}
    for idx, st in state["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                extra[f"{idx}.{key}"] = value
    meta = {"param_groups": json.dumps(state["param_groups"]), "extra": json.dumps(extra)}
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in json.loads(meta["extra"]).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": json.loads(meta["param_groups"])}


def save_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer state as one safetensors file (tensors + JSON metadata; no pickle)."""
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(path), metadata=meta)


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer, device: str | torch.device = "cpu") -> None:
    """Inverse of :func:`save_optimizer`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path), device=str(device)), meta))


def check_resumable(path: Path, saved: dict, now: dict, allowed: set[str]) -> None:
    """ConfigError naming the keys (outside ``allowed``) whose values differ between the checkpoint's config
    ``saved`` and the current one ``now``: resuming would not continue the same run."""
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in allowed)
    if changed:
        raise ConfigError(
            f"cannot resume from '{path}': the config changed in {', '.join(changed)} "
            f"(saved: {', '.join(f'{k}={saved.get(k)!r}' for k in changed)}). Use the same config, or a new output_dir."
        )


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    ckpts = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name) and (p / "trainer_state.json").is_file()]
    return sorted(ckpts, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))


def save_checkpoint(path: Path, *, moco: MoCoFaDeX, optimizer: torch.optim.Optimizer, sampler: FacePairSampler,
                    step: int, cfg: FaDeXTrainConfig) -> Path:
    """Write a complete checkpoint at ``path`` (through a temporary folder, renamed at the end)."""
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    moco.encoder_q.save_pretrained(tmp / "encoder", safe_serialization=True)
    moco.encoder_k.save_pretrained(tmp / "key_encoder", safe_serialization=True)
    save_file(
        {"queue": moco.queue.cpu().contiguous(), "queue_labels": moco.queue_labels.cpu().contiguous(),
         "queue_ptr": moco.queue_ptr.cpu().contiguous()},
        str(tmp / "state.safetensors"),
    )
    save_optimizer(tmp / "optimizer.safetensors", optimizer)
    trainer_state = {"step": step, "sampler": sampler.state_dict(), "config": to_dict(cfg)}
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path, *, moco: MoCoFaDeX, optimizer: torch.optim.Optimizer, sampler: FacePairSampler,
                    cfg: FaDeXTrainConfig) -> int:
    """Restore everything :func:`save_checkpoint` wrote; returns the step. Config changes that would
    break exactness (anything but steps, logging, checkpointing, output and eval keys) are a ConfigError."""
    state = json.loads((path / "trainer_state.json").read_text())
    check_resumable(path, state["config"], to_dict(cfg), RESUMABLE_CHANGES)
    device = moco.queue.device
    moco.encoder_q.load_state_dict(load_file(str(path / "encoder" / WEIGHTS_NAME), device=str(device)))
    moco.encoder_k.load_state_dict(load_file(str(path / "key_encoder" / WEIGHTS_NAME), device=str(device)))
    buffers = load_file(str(path / "state.safetensors"), device=str(device))
    for name in ("queue", "queue_labels", "queue_ptr"):
        getattr(moco, name).copy_(buffers[name])
    load_optimizer(path / "optimizer.safetensors", optimizer, device)
    sampler.load_state_dict(state["sampler"])
    return int(state["step"])


def _batch_metrics(out, labels: torch.Tensor) -> dict[str, float]:
    """In-batch diagnostics: mean cosine to same-op / other-op keys, top-1 op retrieval among the batch keys."""
    with torch.no_grad():
        b = labels.shape[0]
        sim = out.query.detach() @ out.keys.T  # b, b
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(b, dtype=torch.bool, device=sim.device)
        pos, neg = same & ~eye, ~same
        nearest = sim.masked_fill(eye, float("-inf")).argmax(dim=1)
        return {
            "pos_cos": float(sim[pos].mean()) if pos.any() else float("nan"),
            "neg_cos": float(sim[neg].mean()) if neg.any() else float("nan"),
            "top1": float((labels[nearest] == labels).float().mean()),
        }


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (written before a crash, about to be redone)."""
    if not path.is_file():
        return
    kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    write_bytes_atomic(path, ("\n".join(kept) + "\n" if kept else "").encode())


def load_reffr_source(cfg: FaDeXTrainConfig) -> dict[str, Any]:
    """Sampler arguments for Ref-FR pairs: the aligned train-identity faces and the offline Ref-FR.

    Faces are detected (shipped RetinaFace), aligned at ``reffr_size`` and filtered by identity
    (dlib) exactly as the Ref-FR evaluation does, but from the split's ``train_identities``.
    """
    from ..evaluation.reffr import load_heldout_faces
    from ..reffr import reffr_from_name

    ids = load_heldout_faces(split_path=cfg.reffr_split, sources=tuple(cfg.reffr_sources), size=cfg.reffr_size,
                             split_key="train_identities")
    groups = [[f.image for f in faces] for _, faces in sorted(ids.items())]
    logger.info("Ref-FR pairs from %d train identities, %d aligned faces (%d px)", len(groups),
                sum(len(g) for g in groups), cfg.reffr_size)
    reffr = reffr_from_name(cfg.reffr_refiner, cfg.reffr_size)
    return {"reffr_faces": groups, "reffr": reffr,
            "reffr_prob": cfg.reffr_prob, "reffr_max_refs": cfg.reffr_max_refs, "reffr_share": cfg.reffr_share}


def train_fadex(cfg: FaDeXTrainConfig, resume: bool = False, *, hq_fn: HQFn | None = None) -> Path:
    """Train FaDeX with the MoCo-style multi-positive InfoNCE; returns ``<output_dir>/final``.

    Args:
        cfg: the run's settings.
        resume: continue from the newest checkpoint in ``cfg.output_dir`` (a fresh start, with a
            warning, if there is none). Without it, an output folder that already holds
            checkpoints is refused, so a run is never overwritten by accident.
        hq_fn: optional ``hq_fn(lq_uint8, gt_uint8) -> hq_uint8`` (a Ref-FR); default: HQ = clean crop.
    """
    out = Path(cfg.output_dir)
    existing = list_checkpoints(out)
    if existing and not resume:
        raise ConfigError(
            f"'{out}' already holds checkpoints (newest: {existing[-1].name}). Pass resume=True (--resume) to "
            "continue that run, or choose another output_dir."
        )
    if not cfg.data:
        raise ConfigError("no training data: set 'data' to glob patterns of clean face images")
    paths = resolve_images(cfg.data)
    device = _device(cfg.device)

    from ..degradation.families import build_degradation

    degradation = build_degradation(cfg.operators, cfg.degradation)
    reffr_kwargs: dict[str, Any] = {}
    if cfg.reffr_prob > 0:
        reffr_kwargs = load_reffr_source(cfg)
    sampler = FacePairSampler(
        paths, crop_size=cfg.crop_size, ops_per_batch=cfg.ops_per_batch, images_per_op=cfg.images_per_op,
        rescale_range=cfg.rescale_range, preset_prob=cfg.preset_prob, op_pool_size=cfg.op_pool_size,
        degradation=degradation, hq_fn=hq_fn, vary_noise_seed=cfg.vary_noise_seed,
        shared_content_prob=cfg.shared_content_prob, seed=cfg.seed, **reffr_kwargs,
    )
    bank = None
    if cfg.photo_bank_prob > 0:
        from ..training.data import resolve_path
        from .photo_bank import PhotoBank

        folders = [cfg.photo_bank] if isinstance(cfg.photo_bank, str) else cfg.photo_bank
        bank = PhotoBank([resolve_path(f) for f in folders], crop_size=cfg.crop_size, ops_per_batch=cfg.ops_per_batch,
                         images_per_op=cfg.images_per_op, reffr_share=cfg.reffr_share,
                         norefs_share=cfg.bank_norefs_share)
        logger.info("photo bank %s: %d pairs in %d operator groups", cfg.photo_bank, len(bank), len(bank.groups))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = FaDeX(**cfg.model_kwargs())
    if cfg.init and not (resume and existing):
        from ..pipeline import EMBEDDED_DIR

        folder = EMBEDDED_DIR / "fadex" if cfg.init == "embedded" else Path(cfg.init)
        start = FaDeX.from_pretrained(str(folder), use_safetensors=True)
        try:
            model.load_state_dict(start.state_dict())
        except RuntimeError as exc:
            raise ConfigError(f"init FaDeX '{folder}' does not match this config's architecture "
                              f"(channels / blocks_per_stage / embed_dim): {str(exc).splitlines()[0]}") from exc
        logger.info("initialised from %s", folder)
    moco = MoCoFaDeX(model, queue_size=cfg.queue_size, momentum=cfg.momentum, temperature=cfg.temperature).to(device)
    moco.train()
    optimizer = torch.optim.Adam(moco.encoder_q.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    step = 0
    if resume and existing:
        step = load_checkpoint(existing[-1], moco=moco, optimizer=optimizer, sampler=sampler, cfg=cfg)
        logger.info("resumed from %s (step %d)", existing[-1], step)
        _trim_metrics(out / "metrics.jsonl", step)
    elif resume:
        logger.warning("no checkpoint in '%s': starting a new run", out)
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / "config.json", json.dumps(to_dict(cfg), indent=1).encode())
    logger.info("FaDeX training: %d images, batch %dx%d, %d params, device %s, bf16=%s", len(sampler.images),
                cfg.ops_per_batch, cfg.images_per_op, sum(p.numel() for p in model.parameters()), device, cfg.bf16)

    ckpt_root = out / "checkpoints"
    metrics_file = out / "metrics.jsonl"
    pbar = tqdm(total=cfg.steps, initial=step, desc="FaDeX", dynamic_ncols=True)
    t_last = time.perf_counter()
    while step < cfg.steps:
        # the bank's draws depend only on (seed, step), so a resumed run continues the same stream
        bank_rng = np.random.default_rng([cfg.seed, step]) if bank is not None else None
        if bank_rng is not None and bank_rng.random() < cfg.photo_bank_prob:
            batch = bank.sample_batch(bank_rng)
        else:
            batch = sampler.sample_batch()
        lq, hq, labels = batch.tensors(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            mo = moco(lq, hq, labels)
        loss = multi_positive_info_nce(mo.logits, mo.positive_mask, mo.valid_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        pbar.update(1)
        pbar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            record = {"step": step, "loss": loss.item(), **_batch_metrics(mo, labels),
                      "sec_per_step": (now - t_last) / (cfg.log_every if step % cfg.log_every == 0 else 1)}
            t_last = now
            with open(metrics_file, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            logger.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step"))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt_root / f"step_{step:07d}", moco=moco, optimizer=optimizer, sampler=sampler, step=step, cfg=cfg)
            if cfg.keep_checkpoints:
                for old in list_checkpoints(out)[: -cfg.keep_checkpoints]:
                    shutil.rmtree(old)
    pbar.close()

    final = out / "final"
    moco.encoder_q.save_pretrained(final, safe_serialization=True)
    logger.info("saved the trained encoder to %s", final)
    if cfg.eval_data:
        from ..evaluation.fadex import evaluate_fadex

        results = evaluate_fadex(moco.encoder_q, resolve_images(cfg.eval_data), out / "eval",
                                 n_random_ops=cfg.eval_random_ops, seed=cfg.seed)
        logger.info("evaluation: %s", json.dumps(results["summary"]))
    return final


def main(argv: list[str] | None = None) -> int:
    fields = "\n".join(f"  {f.name}: {f.metadata.get('help', '')} (default {f.default if f.default is not dataclasses.MISSING else f.default_factory()!r})"
                       for f in dataclasses.fields(FaDeXTrainConfig))
    parser = argparse.ArgumentParser(
        description="Train FaDeX, the Face2Scene degradation encoder.",
        epilog="config keys (override with key=value):\n" + fields,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML/JSON config file (configs/fadex_default.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=2000 bf16=true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(FaDeXTrainConfig, args.config, args.overrides)
        final = train_fadex(cfg, resume=args.resume)
    except (ConfigError, InputImageError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("done: %s", final)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
