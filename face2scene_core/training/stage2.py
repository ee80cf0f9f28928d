"""Stage-2 training: the one-step restorer conditioned on FaDeX degradation tokens.

    face2scene train-restorer --config configs/restorer_embedded.yaml [--resume] [key=value ...]

Per step (S3Diff recipe, which the paper builds on):

1. a batch of degraded scene crops and, per sample, a face pair made with the same operator (:mod:`.data`);
2. frozen FaDeX encodes each face pair under ``no_grad``; MapNet (trainable, inside the restorer) turns the
   features into 21 tokens;
3. the restorer runs its positive prompt (``cfg_scale=1``) on the LQ crops; with probability
   ``neg_prompt_prob`` (0.05) a sample runs the negative prompt instead and its target is its own LQ crop
   (online negative-prompt learning); with probability ``token_dropout`` the whole batch runs without tokens
   (so one model also serves the no-face fallback);
4. ``loss = lambda_l1 * L1 + lambda_l2 * L2 + lambda_lpips * LPIPS + lambda_gan * GAN`` (S3Diff: 0, 2.0, 5.0, 0.5),
   AdamW lr 2e-5;
   the vision-aided discriminator (frozen DINO + heads) takes one hinge step per batch.

LPIPS and the GAN need user-supplied backbones (none can be downloaded here). Without them the trainer logs
which losses are off and trains with the rest (L2 at minimum); ``require_all_losses: true`` makes a missing
backbone an error. Runs on one CPU or many GPUs through ``accelerate``; trainable weights stay fp32
(``mixed_precision: bf16`` autocasts the forward). Checkpoints are safetensors + JSON only; ``--resume``
continues bit-exactly (weights, optimiser moments, data position, RNG).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..config import to_dict
from ..errors import ConfigError, WeightsNotFoundError
from ..imageio import write_bytes_atomic
from .data import HQFn, Stage2Batch, Stage2Data, Stage2DataConfig, resolve_path
from .losses import LPIPSLoss, discriminator_loss, generator_loss, l2_loss, psnr_gain_loss, psnr_harm_loss

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^step_(\d{7,})$")


@dataclass
class Stage2Config:
    """Stage-2 training configuration (paper / S3Diff values as defaults).

    Model:
        output_dir: run folder (checkpoints, loss history, ``final.safetensors``).
        model: ``small`` (embedded CPU model: pixel-unshuffle codec, small UNet trained in full) or ``sd_turbo``
            (SD-Turbo + LoRA r16 VAE-encoder / r32 UNet + conv_in).
        small: keyword arguments of ``OneStepRestorer.small`` (``feature_channels`` is taken from FaDeX).
        sd_turbo: SD-Turbo single-file checkpoint or diffusers folder (``model: sd_turbo``).
        sd_turbo_options: keyword arguments of ``load_sd_turbo`` (``unet_lora_rank`` 32, ``vae_lora_rank`` 16,
            ``config_dir``, ``cfg_scale`` 1.07 for inference, ``dtype``...).
        mapnet: ``MapNet`` arguments for ``model: sd_turbo`` (``token_dim`` is the UNet's, 1024).
        init_adapter: start from this adapter file instead of a fresh initialisation.
        fadex: FaDeX weights folder (``save_pretrained`` layout), frozen; ``null``: the embedded one.
        use_tokens: ``false`` trains the ablation model with no degradation tokens (no FaDeX, no MapNet).
        token_dropout: probability that a batch trains with ``tokens=None`` (no-face fallback in the same model).
        reset_gate (false): set the FiLM net's output gate back to its initial value (1 for every code) before
            training. For a no-token model started from a token model: there the prompts alone close the gate
            (~3e-4), and a closed sigmoid gate passes almost no gradient, so the blind model would stay the identity.
        neg_prompt_prob: per-sample probability of online negative-prompt learning (paper/S3Diff: 0.05).
    Optimisation:
        steps: optimiser steps (paper: 20k at effective batch 64, 8xA100, 512 px crops).
        batch_size: samples per process per micro-batch; grad_accum: micro-batches per step.
        lr: AdamW learning rate (S3Diff: 2e-5; the small model trained from scratch needs ~1e-4..3e-4).
        weight_decay, adam_betas, max_grad_norm (0 disables clipping), warmup_steps (linear warm-up).
        mixed_precision: ``no`` or ``bf16`` (autocast; weights stay fp32; fp16 would need loss scaling). cpu: force the CPU even with a GPU.
        num_threads: CPU threads of torch (``torch.set_num_threads``); 0 keeps torch's default. On a machine
            shared with other jobs, 1 avoids thread oversubscription (much slower than one thread per core).
    Losses:
        lr_schedule (``constant``): after the warm-up, ``constant`` or ``cosine`` (down to ``lr_min_ratio`` x lr at
            ``steps``; changing ``steps`` on resume changes the rest of the schedule).
        lambda_l1 (0.0), lambda_l2 (2.0), lambda_lpips (5.0), lambda_gan (0.5): weights; 0 turns a term off.
        lambda_psnr (0.0): per-sample PSNR loss (as in HINet), written as the dB lost against the sample's own
            input, ``10 log10((MSE(out, gt) + eps) / (MSE(lq, gt) + eps))`` averaged over the batch (negative = the
            output is better than its input; logged as ``psnr``). Unlike a pixel mean it weighs a mild or clean sample
            as much as a heavy one (the photo benchmark's mean dB gain); ``psnr_eps`` (1e-5, i.e. 50 dB) caps the
            weight of a clean sample.
        lambda_harm (0.0): the same per-sample dB, counted only where the output is worse than its input (logged as
            ``harm``): an extra pull on the samples a restore harms, mild and clean ones first.
        lpips_backbone: safetensors of torchvision's VGG16 ``features``; lpips_heads: optional heads file
            (default: the ``lpips`` wheel's).
        dino_backbone: local Hugging Face folder of a DINO ViT (``Dinov2Model``/``ViTModel``, safetensors).
        dino_layers, disc_resolution, disc_head_dim, disc_lr, gan_loss (``hinge`` | ``ns``): discriminator.
        require_all_losses: a loss with lambda > 0 whose backbone is missing is an error instead of a warning.
    Bookkeeping:
        seed, checkpoint_every, keep_checkpoints (newest kept), log_every (loss-history interval),
        overfit_batches (``n > 0`` repeats the first n batches: debugging), data (:class:`Stage2DataConfig`).
    """

    output_dir: str = "runs/restorer"
    model: Literal["small", "sd_turbo"] = "small"
    small: dict[str, Any] = field(default_factory=dict)
    sd_turbo: str | None = None
    sd_turbo_options: dict[str, Any] = field(default_factory=dict)
    mapnet: dict[str, Any] = field(default_factory=dict)
    init_adapter: str | None = None
    fadex: str | None = None
    use_tokens: bool = True
    token_dropout: float = 0.0
    reset_gate: bool = False
    neg_prompt_prob: float = 0.05
    steps: int = 20000
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    mixed_precision: str | bool = "no"
    cpu: bool = False
    num_threads: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_min_ratio: float = 0.05
    lambda_l1: float = 0.0
    lambda_l2: float = 2.0
    lambda_lpips: float = 5.0
    lambda_gan: float = 0.5
    lambda_psnr: float = 0.0
    psnr_eps: float = 1e-5
    lambda_harm: float = 0.0
    lpips_backbone: str | None = None
    lpips_heads: str | None = None
    dino_backbone: str | None = None
    dino_layers: list[int] = field(default_factory=lambda: [2, 5, 8, 11])
    disc_resolution: int = 224
    disc_head_dim: int = 256
    disc_lr: float = 2e-5
    gan_loss: Literal["hinge", "ns"] = "hinge"
    require_all_losses: bool = False
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    overfit_batches: int = 0
    data: Stage2DataConfig = field(default_factory=Stage2DataConfig)

    def __post_init__(self) -> None:
        if self.mixed_precision in (False, "false", "off", "fp32"):  # YAML reads a bare `no` as false
            self.mixed_precision = "no"
        if self.mixed_precision not in ("no", "bf16"):
            raise ConfigError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("token_dropout", "neg_prompt_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("lr", "disc_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ConfigError(f"lr_min_ratio must be in [0, 1], got {self.lr_min_ratio}")
        for name in ("lambda_l1", "lambda_l2", "lambda_lpips", "lambda_gan", "lambda_psnr", "lambda_harm", "weight_decay",
                     "max_grad_norm", "warmup_steps", "overfit_batches", "num_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lambda_l1 + self.lambda_l2 + self.lambda_lpips + self.lambda_gan + self.lambda_psnr <= 0:
            raise ConfigError("at least one of lambda_l1, lambda_l2, lambda_lpips, lambda_gan, lambda_psnr must be > 0")
        if not self.psnr_eps > 0:
            raise ConfigError(f"psnr_eps must be > 0, got {self.psnr_eps}")
        if self.model == "sd_turbo" and not self.sd_turbo:
            raise ConfigError("model: sd_turbo needs `sd_turbo: PATH` (single-file checkpoint or diffusers folder)")


# ---------------------------------------------------------------------------------------------- model parts
class Stage2Model(nn.Module):
    """Everything that trains, behind one ``forward`` (so ``accelerate``/DDP sees a single module).

    ``forward(lq, features, negative)``: ``lq (B, 3, H, W)`` in [0, 1]; ``features`` a list of B FaDeX feature
    maps ``(1, C, h_i, w_i)`` or ``None`` (no tokens); ``negative`` a bool list of length B (negative prompt).
    Returns the restored batch ``(B, 3, H, W)`` in [0, 1], in input order.
    """

    def __init__(self, restorer: nn.Module) -> None:
        super().__init__()
        self.restorer = restorer

    def forward(self, lq: torch.Tensor, features: list[torch.Tensor] | None, negative: list[bool]) -> torch.Tensor:
        tokens = None
        if features is not None:
            tokens = torch.cat([self.restorer.tokens_from_features(f) for f in features])  # b, 21, d
        neg = torch.tensor(negative, device=lq.device)
        out = torch.empty_like(lq)
        for flag in (False, True):
            idx = (neg == flag).nonzero().flatten()
            if idx.numel() == 0:
                continue
            sub_tokens = None if tokens is None else tokens[idx]
            out = out.index_copy(0, idx, self.restorer(lq[idx], sub_tokens, cfg_scale=1.0, negative_only=flag).to(out.dtype))
        return out


def load_fadex(path: str | None) -> nn.Module:
    """The frozen FaDeX encoder from a ``save_pretrained`` folder (safetensors), in eval mode."""
    from ..fadex.model import FaDeX
    from ..pipeline import EMBEDDED_DIR

    folder = resolve_path(path) if path else EMBEDDED_DIR / "fadex"
    if not (folder / "config.json").is_file():
        raise WeightsNotFoundError(
            f"FaDeX weights not found in '{folder}' (config.json + diffusion_pytorch_model.safetensors). "
            "Train one with `face2scene train-fadex` and set `fadex: FOLDER`."
        )
    model = FaDeX.from_pretrained(str(folder), use_safetensors=True)
    model.requires_grad_(False)
    return model.eval()


def build_restorer(cfg: Stage2Config, feature_channels: int | None) -> nn.Module:
    """The restorer to train (fresh, or from ``init_adapter``); ``feature_channels=None`` builds no MapNet."""
    from ..mapnet.model import MapNet
    from ..restorer.model import OneStepRestorer

    init_spec = None
    if cfg.init_adapter:
        from ..restorer.adapter import read_adapter_spec

        init_spec = read_adapter_spec(resolve_path(cfg.init_adapter))
    drop_init_mapnet = feature_channels is None and bool((init_spec or {}).get("mapnet"))
    if drop_init_mapnet:  # a no-token model started from a token model: same weights, its MapNet left out
        feature_channels = init_spec["mapnet"]["in_channels"]
    if cfg.model == "small":
        kwargs = dict(cfg.small)
        if "feature_channels" in kwargs and kwargs["feature_channels"] != feature_channels:
            log.info("small.feature_channels=%s replaced by %s (from FaDeX / use_tokens)", kwargs["feature_channels"],
                     feature_channels)
        kwargs["feature_channels"] = feature_channels
        kwargs.setdefault("seed", cfg.seed)
        try:
            restorer = OneStepRestorer.small(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"invalid `small` model arguments {sorted(cfg.small)}: {exc}") from exc
    else:
        from ..restorer.sd_turbo import load_sd_turbo

        opts = dict(cfg.sd_turbo_options)
        if "config_dir" in opts:
            opts["config_dir"] = resolve_path(str(opts["config_dir"]))
        try:
            restorer = load_sd_turbo(resolve_path(cfg.sd_turbo), **opts)
        except TypeError as exc:
            raise ConfigError(f"invalid `sd_turbo_options` {sorted(opts)}: {exc}") from exc
        if feature_channels is not None:  # a fresh MapNet (token width = the UNet's cross-attention width)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                restorer.mapnet = MapNet(in_channels=feature_channels, token_dim=restorer.token_dim, **cfg.mapnet)
    if cfg.init_adapter:
        restorer.load_adapter(str(resolve_path(cfg.init_adapter)))
    if drop_init_mapnet:
        log.info("use_tokens is false: the MapNet of %s is not used", cfg.init_adapter)
        restorer.mapnet = None
    if cfg.reset_gate:
        gate = getattr(restorer.unet, "gate", None)
        if not isinstance(gate, nn.Linear):
            raise ConfigError("reset_gate: this restorer has no output gate (only `small: {net: film}` has one)")
        nn.init.zeros_(gate.weight)
        nn.init.zeros_(gate.bias)
    return restorer


@dataclass
class LossSet:
    """The loss modules in use, and why the others are off."""

    lpips: nn.Module | None
    disc: nn.Module | None
    off: dict[str, str]
    l1: bool = False
    l2: bool = True
    psnr: bool = False

    @property
    def on(self) -> list[str]:
        flags = (("l1", self.l1), ("l2", self.l2), ("psnr", self.psnr), ("lpips", self.lpips is not None),
                 ("gan", self.disc is not None))
        return [name for name, m in flags if m]


def build_losses(cfg: Stage2Config) -> LossSet:
    """LPIPS and the discriminator from the configured backbones; missing ones are logged (or raise)."""
    from ..errors import MissingBackboneError
    from .discriminator import DinoDiscriminator

    lpips = disc = None
    off: dict[str, str] = {}
    if cfg.lambda_l2 == 0:
        off["l2"] = "lambda_l2 is 0"
    if cfg.lambda_lpips > 0:
        try:
            lpips = LPIPSLoss(resolve_path(cfg.lpips_backbone) if cfg.lpips_backbone else None,
                              heads_weights=resolve_path(cfg.lpips_heads) if cfg.lpips_heads else None)
        except MissingBackboneError as exc:
            if cfg.require_all_losses:
                raise
            off["lpips"] = str(exc)
    else:
        off["lpips"] = "lambda_lpips is 0"
    if cfg.lambda_gan > 0:
        try:
            disc = DinoDiscriminator.from_pretrained(
                resolve_path(cfg.dino_backbone) if cfg.dino_backbone else None, layers=tuple(cfg.dino_layers),
                head_dim=cfg.disc_head_dim, resolution=cfg.disc_resolution,
            )
        except MissingBackboneError as exc:
            if cfg.require_all_losses:
                raise
            off["gan"] = str(exc)
    else:
        off["gan"] = "lambda_gan is 0"
    for name, why in off.items():
        if "lambda" in why:
            log.info("loss %s off: %s", name, why)
        else:
            log.warning("loss %s OFF: %s", name.upper(), why)
    return LossSet(lpips=lpips, disc=disc, off=off, l1=cfg.lambda_l1 > 0, l2=cfg.lambda_l2 > 0, psnr=cfg.lambda_psnr > 0)


# ---------------------------------------------------------------------------------------------- checkpoints
def _flatten_optimizer(sd: dict, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict as flat tensors + JSON (safetensors cannot hold nested objects)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict, prefix: str) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix + "."):
            continue
        idx, key = name[len(prefix) + 1:].split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _module_state(module: nn.Module, prefix: str, *, trainable_only: bool) -> dict[str, torch.Tensor]:
    out = {f"{prefix}{n}": p.detach().cpu().contiguous() for n, p in module.named_parameters()
           if p.requires_grad or not trainable_only}
    out.update({f"{prefix}{n}": b.detach().cpu().contiguous() for n, b in module.named_buffers()})
    return out


def _load_module_state(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> int:
    named = dict(module.named_parameters())
    named.update(dict(module.named_buffers()))
    n = 0
    with torch.no_grad():
        for key, value in tensors.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix):]
            if name not in named:
                raise ConfigError(f"checkpoint tensor '{key}' has no counterpart in the model: the config changed "
                                  "since the checkpoint was written; resume with the same model settings.")
            named[name].copy_(value.to(named[name].dtype))
            n += 1
    return n


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    pointer = out / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    folder = out / "checkpoints" / json.loads(pointer.read_text())["dir"]
    return folder if (folder / "state.json").is_file() else None


# ---------------------------------------------------------------------------------------------- trainer
class Stage2Trainer:
    """Holds the models, optimisers, data and history of one run; :func:`train_restorer` drives it."""

    def __init__(self, cfg: Stage2Config, *, hq_fn: HQFn | None = None, detector: Any = None,
                 degradation: Any = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.cpu)
        set_seed(cfg.seed)
        self.losses = build_losses(cfg)
        self.fadex = load_fadex(cfg.fadex).to(self.acc.device) if cfg.use_tokens else None
        feature_channels = self.fadex.feature_channels if self.fadex is not None else None
        self.restorer = build_restorer(cfg, feature_channels)
        if cfg.use_tokens and self.restorer.mapnet is None:
            raise ConfigError("use_tokens is true but the restorer has no MapNet")
        self.params = [p for p in self.restorer.parameters() if p.requires_grad]
        for p in self.params:  # trainable weights stay fp32 (mixed precision only autocasts)
            p.data = p.data.float()
        self.model = Stage2Model(self.restorer)
        opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)
        self.model, self.opt = self.acc.prepare(self.model, opt)
        # The discriminator is not wrapped in DDP: a process whose micro-batch has no positive-prompt sample
        # skips it, so its heads' gradients are averaged by hand (a collective every process joins).
        self.disc = self.disc_opt = None
        if self.losses.disc is not None:
            self.disc = self.losses.disc.to(self.acc.device)
            self.disc_opt = torch.optim.AdamW(self.disc.head_parameters(), lr=cfg.disc_lr, betas=(0.0, 0.99),
                                              weight_decay=0.0)
        self.lpips = self.losses.lpips.to(self.acc.device) if self.losses.lpips is not None else None
        self.data = Stage2Data(cfg.data, batch_size=cfg.batch_size, seed=cfg.seed, cache_dir=self.out,
                               detector=detector, degradation=degradation, hq_fn=hq_fn,
                               overfit_batches=cfg.overfit_batches)
        self.step = 0
        self.history: list[dict] = []
        n_train = sum(p.numel() for p in self.params)
        log.info("stage 2: %s model, %.2f M trainable parameters, losses on: %s, device %s, mixed precision %s",
                 cfg.model, n_train / 1e6, ", ".join(self.losses.on), self.acc.device, cfg.mixed_precision)

    # ------------------------------------------------------------------ one step
    def _micro_batch(self) -> tuple[Stage2Batch, np.random.Generator]:
        """The next micro-batch of this process and the generator of its training-side draws."""
        micro = self.data.batch_index
        self.data.batch_index += 1
        rank, world = self.acc.process_index, self.acc.num_processes
        rng = np.random.default_rng([self.cfg.seed, 3, micro, rank])
        return self.data.batch(micro * world + rank).to(self.acc.device), rng

    @torch.no_grad()
    def _features(self, batch: Stage2Batch) -> list[torch.Tensor]:
        with self.acc.autocast():
            return [self.fadex(lq, hq).features.float() for lq, hq in zip(batch.face_lq, batch.face_hq)]

    def _losses(self, batch: Stage2Batch, rng: np.random.Generator, drop_tokens: bool
                ) -> tuple[torch.Tensor, dict, tuple[torch.Tensor, torch.Tensor] | None]:
        """Generator loss of one micro-batch, its logged terms, and the (real, fake) pair for the discriminator."""
        cfg = self.cfg
        b = batch.lq.shape[0]
        negative = (rng.random(b) < cfg.neg_prompt_prob).tolist()
        features = None if drop_tokens else self._features(batch)
        restored = self.model(batch.lq, features, negative).float()
        neg = torch.tensor(negative, device=batch.lq.device)
        target = torch.where(neg.view(-1, 1, 1, 1), batch.lq, batch.hq)
        terms: dict[str, torch.Tensor] = {}
        if cfg.lambda_l1 > 0:
            terms["l1"] = (restored - target).abs().mean()
        if cfg.lambda_l2 > 0:
            terms["l2"] = l2_loss(restored, target)
        if cfg.lambda_psnr > 0:
            terms["psnr"] = psnr_gain_loss(restored, target, batch.lq, cfg.psnr_eps)
        if cfg.lambda_harm > 0:
            terms["harm"] = psnr_harm_loss(restored, target, batch.lq, cfg.psnr_eps)
        if self.lpips is not None:
            with self.acc.autocast():
                terms["lpips"] = self.lpips(restored, target).float()
        pos = (~neg).nonzero().flatten()
        fake = None
        if self.disc is not None and pos.numel() > 0:  # negative-prompt samples (LQ targets) stay out of the GAN
            fake = restored[pos]
            terms["gan"] = generator_loss(self.disc(fake), cfg.gan_loss)
        weights = {"l1": cfg.lambda_l1, "l2": cfg.lambda_l2, "lpips": cfg.lambda_lpips, "gan": cfg.lambda_gan,
                   "psnr": cfg.lambda_psnr, "harm": cfg.lambda_harm}
        total = sum(weights[k] * v for k, v in terms.items())
        logs = {k: float(v.detach()) for k, v in terms.items()}
        logs["negative_frac"] = float(np.mean(negative))
        logs["tokens_frac"] = float(not drop_tokens)
        return total, logs, (batch.hq[pos], fake.detach()) if fake is not None else None

    def _disc_step(self, pair: tuple[torch.Tensor, torch.Tensor] | None) -> float | None:
        """One discriminator update on (real HQ, restored) images; heads' gradients averaged over processes."""
        self.disc_opt.zero_grad(set_to_none=False)  # also drops the generator loss's gradients on the heads
        d_loss = None
        if pair is not None:
            real, fake = pair
            d_loss = discriminator_loss(self.disc(real, backbone_grad=False), self.disc(fake, backbone_grad=False),
                                        self.cfg.gan_loss)
            d_loss.backward()
        if self.acc.num_processes > 1:
            for p in self.disc.head_parameters():
                p.grad = self.acc.reduce(p.grad if p.grad is not None else torch.zeros_like(p), "mean")
        if pair is not None or self.acc.num_processes > 1:
            self.disc_opt.step()
        return None if d_loss is None else float(d_loss.detach())

    def train_step(self) -> dict:
        """One optimiser step (``grad_accum`` micro-batches) + one discriminator step per micro-batch."""
        cfg = self.cfg
        self.model.train()
        lr = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        if cfg.lr_schedule == "cosine":  # from lr down to lr_min_ratio * lr at step `steps`
            t = min(self.step / max(cfg.steps, 1), 1.0)
            lr *= cfg.lr_min_ratio + (1.0 - cfg.lr_min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
        for group in self.opt.param_groups:
            group["lr"] = lr
        sums: dict[str, float] = {}
        self.opt.zero_grad(set_to_none=True)
        for k in range(cfg.grad_accum):
            micro = self.data.batch_index
            batch, rng = self._micro_batch()
            # token dropout is drawn per micro-batch and alike on every process (DDP needs MapNet used everywhere)
            drop_tokens = (not cfg.use_tokens) or bool(np.random.default_rng([cfg.seed, 4, micro]).random()
                                                       < cfg.token_dropout)
            sync = contextlib.nullcontext() if k == cfg.grad_accum - 1 else self.acc.no_sync(self.model)
            with sync:
                total, logs, gan_pair = self._losses(batch, rng, drop_tokens)
                self.acc.backward(total / cfg.grad_accum)
            logs["total"] = float(total.detach())
            if self.disc is not None:
                d_loss = self._disc_step(gan_pair)
                if d_loss is not None:
                    logs["d_loss"] = d_loss
            for key, value in logs.items():
                if isinstance(value, float):
                    sums[key] = sums.get(key, 0.0) + value / cfg.grad_accum
        if cfg.max_grad_norm > 0:
            self.acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.opt.step()
        self.step += 1
        sums["lr"] = lr
        return sums

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """``checkpoints/step_NNNNNNN/``: weights, optimiser state, RNG (safetensors) + ``state.json``."""
        self.acc.wait_for_everyone()
        folder = self.out / "checkpoints" / f"step_{self.step:07d}"
        if not self.acc.is_main_process:
            return folder
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        restorer = self.acc.unwrap_model(self.model).restorer
        weights = _module_state(restorer, "restorer.", trainable_only=True)
        tensors, meta = _flatten_optimizer(self.opt.state_dict(), "opt")
        opt_meta = {"opt": meta}
        if self.disc is not None:
            weights.update({f"disc.heads.{k}": v.detach().cpu().contiguous()
                            for k, v in self.disc.heads.state_dict().items()})
            d_tensors, d_meta = _flatten_optimizer(self.disc_opt.state_dict(), "disc_opt")
            tensors.update(d_tensors)
            opt_meta["disc_opt"] = d_meta
        tensors["rng.torch_cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.torch_cuda.{i}"] = s
        save_file(weights, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        restorer.save_adapter(tmp / "adapter.safetensors")
        state = {"step": self.step, "data": self.data.state_dict(), "optimizers": opt_meta,
                 "config": to_dict(self.cfg), "losses_on": self.losses.on}
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        write_bytes_atomic(self.out / "checkpoints" / "latest.json", json.dumps({"dir": folder.name, "step": self.step}).encode())
        self._write_history()
        old = sorted(p for p in (self.out / "checkpoints").iterdir() if CKPT_RE.match(p.name))
        for p in old[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(p)
        log.info("checkpoint: %s", folder)
        return folder

    def load_checkpoint(self, folder: Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote (exact continuation)."""
        state = json.loads((folder / "state.json").read_text())
        weights = load_file(str(folder / "model.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        restorer = self.acc.unwrap_model(self.model).restorer
        _load_module_state(restorer, weights, "restorer.")
        self.opt.load_state_dict(_unflatten_optimizer(tensors, state["optimizers"]["opt"], "opt"))
        if self.disc is not None:
            if "disc_opt" not in state["optimizers"]:
                raise ConfigError(f"checkpoint '{folder}' was trained without the GAN loss; resume with the same losses.")
            self.disc.heads.load_state_dict({k[len("disc.heads."):]: v for k, v in weights.items()
                                             if k.startswith("disc.heads.")})
            self.disc_opt.load_state_dict(_unflatten_optimizer(tensors, state["optimizers"]["disc_opt"], "disc_opt"))
        torch.set_rng_state(tensors["rng.torch_cpu"])
        if torch.cuda.is_available():
            cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.torch_cuda.")]
            if cuda:
                torch.cuda.set_rng_state_all(cuda)
        self.data.load_state_dict(state["data"])
        self.step = int(state["step"])
        hist = self.out / "loss_history.json"
        if hist.is_file():
            self.history = [h for h in json.loads(hist.read_text()).get("history", []) if h["step"] <= self.step]
        log.info("resumed from %s (step %d)", folder, self.step)

    def _write_history(self) -> None:
        if not self.acc.is_main_process:
            return
        doc = {"losses_on": self.losses.on, "losses_off": self.losses.off, "num_processes": self.acc.num_processes,
               "history": self.history}
        write_bytes_atomic(self.out / "loss_history.json", json.dumps(doc, indent=1).encode())

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        cfg = self.cfg
        window: dict[str, float] = {}
        n_window, t_window = 0, time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="stage 2", disable=not self.acc.is_main_process)
        while self.step < cfg.steps:
            logs = self.train_step()
            for key, value in logs.items():
                window[key] = window.get(key, 0.0) + value
            n_window += 1
            bar.update(1)
            bar.set_postfix({k: f"{logs[k]:.4f}" for k in ("total", "l1", "l2", "lpips", "gan") if k in logs})
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                entry = {"step": self.step, **{k: v / n_window for k, v in window.items()},
                         "sec_per_step": (time.perf_counter() - t_window) / n_window}
                self.history.append(entry)
                log.info("step %d: %s", self.step, ", ".join(f"{k}={v:.4g}" for k, v in entry.items() if k != "step"))
                window, n_window, t_window = {}, 0, time.perf_counter()
            if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                self.save_checkpoint()
        bar.close()
        self.save_checkpoint()
        final = self.out / "final.safetensors"
        if self.acc.is_main_process:
            self.acc.unwrap_model(self.model).restorer.save_adapter(final)
            self._write_history()
        self.acc.wait_for_everyone()
        return final


def train_restorer(cfg: Stage2Config, resume: bool = False, *, hq_fn: HQFn | None = None, detector: Any = None,
                   degradation: Any = None) -> Path:
    """Train the restorer; returns ``<output_dir>/final.safetensors`` (the adapter, via ``save_adapter``).

    ``resume=True`` continues from the newest checkpoint in ``output_dir`` (and starts fresh, with a warning,
    when there is none). Starting without ``resume`` in a folder that already has checkpoints is a
    :class:`ConfigError` (nothing is overwritten). ``hq_fn``, ``detector`` and ``degradation`` are passed to
    :class:`Stage2Data` (a Ref-FR for the HQ faces, a face detector, a degradation model).
    """
    if not isinstance(cfg, Stage2Config):
        raise ValueError(f"cfg must be a Stage2Config, got {type(cfg).__name__}")
    out = Path(cfg.output_dir)
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not resume:
        raise ConfigError(f"'{out}' already holds a run (checkpoint {ckpt.name}); pass --resume to continue it, "
                          "or choose another output_dir.")
    out.mkdir(parents=True, exist_ok=True)
    trainer = Stage2Trainer(cfg, hq_fn=hq_fn, detector=detector, degradation=degradation)
    if resume:
        if ckpt is None:
            log.warning("--resume: no checkpoint in '%s'; starting from step 0", out)
        else:
            trainer.load_checkpoint(ckpt)
    if trainer.acc.is_main_process:
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    try:
        return trainer.fit()
    except KeyboardInterrupt:
        log.warning("interrupted at step %d; the last checkpoint is in '%s' (continue with --resume)", trainer.step,
                    out / "checkpoints")
        raise


__all__ = [
    "Stage2Config",
    "Stage2Model",
    "Stage2Trainer",
    "LossSet",
    "build_losses",
    "build_restorer",
    "load_fadex",
    "latest_checkpoint",
    "train_restorer",
]
