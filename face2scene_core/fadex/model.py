"""FaDeX: the facial degradation encoder (Face2Scene, Stage II).

FaDeX looks at a face *pair*, the degraded (LQ) crop and its restored (HQ) counterpart at the same
native scale, and describes the degradation that separates them:

* ``features``: a spatial map ``(B, C, ceil(H/4), ceil(W/4))`` that MapNet turns into 21 tokens;
* ``embedding``: a pooled, L2-normalised vector ``(B, D)`` trained with a supervised contrastive
  loss so that pairs sharing a degradation operator lie close together (see :mod:`.moco`).

The encoder is fully convolutional (a stack of Conv -> BatchNorm -> LeakyReLU blocks, total
stride 4), so any crop of at least 32 px per side works, square or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..errors import FaceTooSmallError
from .pair_stats import N_PAIR_STATS, pair_stats

#: Smallest side (pixels) of a face crop FaDeX accepts: a /4 encoder then gives a map of at least
#: 8x8, which MapNet's stride-2 embedding needs to fill its 4x4 token grid.
MIN_INPUT_SIZE = 32


@dataclass
class FaDeXOutput(BaseOutput):
    """Output of :class:`FaDeX`.

    Args:
        features: ``torch.Tensor`` ``(B, C, ceil(H/4), ceil(W/4))``, spatial degradation features
            (``C == FaDeX.feature_channels``), the input of MapNet.
        embedding: ``torch.Tensor`` ``(B, D)`` float32, unit L2 norm per row (``D == embed_dim``),
            the vector trained by the contrastive loss.
    """

    features: torch.Tensor
    embedding: torch.Tensor


class ConvBNAct(nn.Sequential):
    """3x3 convolution (no bias) -> BatchNorm2d -> LeakyReLU."""

    def __init__(self, *, in_channels: int, out_channels: int, stride: int, negative_slope: float):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(negative_slope, inplace=True),
        )


class FaDeX(ModelMixin, ConfigMixin):
    r"""Degradation encoder of a (LQ, HQ) face pair.

    Parameters:
        in_channels (`int`, defaults to 6): channels of the concatenated input, LQ (3) then HQ (3).
        channels (`tuple[int, ...]`, defaults to `(64, 128, 256)`): output channels of each stage,
            at least two stages. The last two stages start with a stride-2 block, every other
            block has stride 1, so the total stride is always 4.
        blocks_per_stage (`tuple[int, ...]`, defaults to `(2, 2, 2)`): Conv-BN-LeakyReLU blocks per
            stage (same length as ``channels``, each >= 1).
        embed_dim (`int`, defaults to 256): size of the L2-normalised embedding (paper: 256).
        proj_hidden (`int`, defaults to 512): hidden width of the projection head
            (global pool -> Linear -> LeakyReLU -> Linear -> L2 normalise).
        negative_slope (`float`, defaults to 0.1): LeakyReLU slope, in ``[0, 1)``.
        pool_stages (`int`, defaults to 1): the head reads the pooled output of the last ``pool_stages`` stages
            (1: the feature map alone; up to ``len(channels)``).
        pool_std (`bool`, defaults to `False`): pool each of those maps to its channel means *and* standard deviations
            (how strongly a degradation's texture varies over the face, e.g. noise or JPEG blocks), not means alone.
        pair_stats (`bool`, defaults to `False`): the head also reads 14 classic statistics of the pair
            (:func:`~face2scene_core.fadex.pair_stats.pair_stats`: JPEG blockiness, noise level, band energies, chroma
            noise of the LQ face and their ratios to the HQ face's); the feature map does not change.

    Inputs are tensor images in ``[0, 1]``; they are mapped to ``[-1, 1]`` inside.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 6,
        channels: tuple[int, ...] = (64, 128, 256),
        blocks_per_stage: tuple[int, ...] = (2, 2, 2),
        embed_dim: int = 256,
        proj_hidden: int = 512,
        negative_slope: float = 0.1,
        pool_stages: int = 1,
        pool_std: bool = False,
        pair_stats: bool = False,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        blocks_per_stage = tuple(int(b) for b in blocks_per_stage)
        if in_channels <= 0 or in_channels % 2:
            raise ValueError(f"in_channels must be a positive even number (LQ + HQ), got {in_channels}")
        if len(channels) < 2 or any(c <= 0 for c in channels):
            raise ValueError(f"channels needs at least two positive entries (stride 4), got {channels}")
        if len(blocks_per_stage) != len(channels) or any(b < 1 for b in blocks_per_stage):
            raise ValueError(
                f"blocks_per_stage must have one entry >= 1 per stage ({len(channels)}), got {blocks_per_stage}"
            )
        if embed_dim <= 0 or proj_hidden <= 0:
            raise ValueError(f"embed_dim and proj_hidden must be positive, got {embed_dim}, {proj_hidden}")
        if not 0.0 <= negative_slope < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {negative_slope}")
        if pair_stats and in_channels != 6:
            raise ValueError(f"pair_stats reads an RGB LQ and an RGB HQ face (in_channels=6), got in_channels={in_channels}")
        if not 1 <= pool_stages <= len(channels):
            raise ValueError(f"pool_stages must be in [1, {len(channels)}] (the number of stages), got {pool_stages}")

        strides = [1] * (len(channels) - 2) + [2, 2]
        layers: list[nn.Module] = []
        prev = in_channels
        for out, n_blocks, stride in zip(channels, blocks_per_stage, strides):
            for i in range(n_blocks):
                layers.append(
                    ConvBNAct(
                        in_channels=prev, out_channels=out, stride=stride if i == 0 else 1, negative_slope=negative_slope
                    )
                )
                prev = out
        self.encoder = nn.Sequential(*layers)
        ends = np.cumsum(blocks_per_stage) - 1
        self._pool_after = {int(i) for i in ends[len(ends) - pool_stages:]}  # encoder layers whose output is pooled
        pooled_dim = sum(channels[len(channels) - pool_stages:]) * (2 if pool_std else 1)
        pooled_dim += N_PAIR_STATS if pair_stats else 0
        self.head = nn.Sequential(
            nn.Linear(pooled_dim, proj_hidden),
            nn.LeakyReLU(negative_slope, inplace=True),
            nn.Linear(proj_hidden, embed_dim),
        )

    @property
    def feature_channels(self) -> int:
        """Channels ``C`` of :attr:`FaDeXOutput.features` (the last stage's width)."""
        return int(self.config.channels[-1])

    @property
    def embed_dim(self) -> int:
        """Size ``D`` of :attr:`FaDeXOutput.embedding`."""
        return int(self.config.embed_dim)

    def _check(self, lq: torch.Tensor, hq: torch.Tensor) -> None:
        if lq.ndim != 4 or hq.ndim != 4:
            raise ValueError(f"lq and hq must be (B, C, H, W) tensors, got shapes {tuple(lq.shape)}, {tuple(hq.shape)}")
        if lq.shape != hq.shape:
            raise ValueError(f"lq and hq must have the same shape, got {tuple(lq.shape)} and {tuple(hq.shape)}")
        if lq.shape[1] + hq.shape[1] != self.config.in_channels:
            raise ValueError(
                f"lq and hq channels must add up to in_channels={self.config.in_channels}, got {lq.shape[1]} + {hq.shape[1]}"
            )
        if min(lq.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"face crops must be at least {MIN_INPUT_SIZE} px per side, got {tuple(lq.shape[-2:])}")
        top = float(torch.maximum(lq.detach().amax(), hq.detach().amax()))
        if top > 1.5:
            raise ValueError(f"lq/hq must be tensor images in [0, 1], got values up to {top:g} (0-255 input? divide by 255)")

    def forward(self, lq: torch.Tensor, hq: torch.Tensor) -> FaDeXOutput:
        """Encode a batch of face pairs.

        Args:
            lq: degraded crops, float tensor ``(B, 3, H, W)`` in ``[0, 1]``, ``H, W >= 32``.
            hq: restored (or ground-truth) crops at the same native scale, same shape as ``lq``.

        Returns:
            :class:`FaDeXOutput` with ``features (B, C, ceil(H/4), ceil(W/4))`` and a float32
            ``embedding (B, D)`` of unit norm.
        """
        self._check(lq, hq)
        features, pooled = self.encode(torch.cat([lq, hq], dim=1) * 2.0 - 1.0)
        embedding = F.normalize(self.head(pooled).float(), dim=1)  # b, d
        return FaDeXOutput(features=features, embedding=embedding)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder on a pair batch ``x (B, 6, H, W)`` in ``[-1, 1]`` (LQ then HQ): the feature map
        ``(B, C, H/4, W/4)`` and the head's input ``(B, P)``, the channel means (and standard deviations, with
        ``pool_std``) of each pooled stage, stage by stage, then (with ``pair_stats``) the pair's statistics."""
        pooled = []
        stats = pair_stats((x[:, :3] + 1.0) / 2.0, (x[:, 3:6] + 1.0) / 2.0) if self.config.pair_stats else None
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i in self._pool_after:
                pooled += [x.mean(dim=(2, 3)), x.std(dim=(2, 3))] if self.config.pool_std else [x.mean(dim=(2, 3))]
        if stats is not None:
            pooled.append(stats.to(pooled[0].dtype))
        return x, torch.cat(pooled, dim=1)

    @torch.no_grad()
    def encode_pair(self, lq: np.ndarray, hq: np.ndarray, max_side: int = 512) -> FaDeXOutput:
        """Encode one (LQ, HQ) face pair given as image arrays, at native scale.

        The pair is never resized (resizing changes blur and noise, the very thing measured):
        pairs larger than ``max_side`` are centre-cropped to at most ``max_side`` per side.
        Runs with BatchNorm in eval mode (the module's mode is restored afterwards).

        Args:
            lq: ``np.uint8 (H, W, 3)`` RGB degraded face crop.
            hq: ``np.uint8 (H, W, 3)`` restored face warped back to the same crop (same shape).
            max_side: largest side kept by the centre crop, ``>= 32``.

        Returns:
            :class:`FaDeXOutput` with batch size 1, on the model's device.

        Raises:
            FaceTooSmallError: a side of the crop is under 32 px.
            ValueError: wrong dtype, shape, or ``max_side``.
        """
        if max_side < MIN_INPUT_SIZE:
            raise ValueError(f"max_side must be >= {MIN_INPUT_SIZE}, got {max_side}")
        for name, arr in (("lq", lq), ("hq", hq)):
            if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
                raise ValueError(
                    f"{name} must be a uint8 (H, W, 3) RGB array, got "
                    f"{getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}"
                )
        if lq.shape != hq.shape:
            raise ValueError(f"lq and hq must have the same shape, got {lq.shape} and {hq.shape}")
        h, w = lq.shape[:2]
        if min(h, w) < MIN_INPUT_SIZE:
            raise FaceTooSmallError(
                f"The face crop is {w}x{h} px; FaDeX needs at least {MIN_INPUT_SIZE} px per side to measure the "
                "degradation. Use a photo where the face is larger, or pick a larger face."
            )
        top, left = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
        box = (slice(top, top + min(h, max_side)), slice(left, left + min(w, max_side)))

        def to_tensor(arr: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(arr[box])).permute(2, 0, 1)[None]
            return t.to(device=self.device, dtype=self.dtype) / 255.0

        was_training = self.training
        self.eval()
        try:
            return self(to_tensor(lq), to_tensor(hq))
        finally:
            self.train(was_training)


__all__ = ["FaDeX", "FaDeXOutput", "MIN_INPUT_SIZE"]
