"""A small learned stage after the reference transfer: restores what no reference detail explained.

:class:`~face2scene_core.reffr.transfer.ReferenceTransferRefFR` brings in reference detail only where a
reference matches the face; elsewhere its output is the denoised LQ, which keeps the operator's blur
and contrast loss. :class:`RefineNet` is a residual CNN that looks at the LQ face and that output
together and predicts the correction towards the clean face; :class:`RefinedRefFR` chains the two.
Trained on CPU by ``python -m face2scene_core.reffr.train_refine`` (train identities of
``configs/split.json`` and the FFHQ training faces, random Real-ESRGAN operators), shipped as
``face2scene_core/weights/reffr_refine`` (safetensors).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import ConfigError
from .base import RefFR
from .transfer import ReferenceTransferRefFR

logger = logging.getLogger(__name__)


class _ResBlock(nn.Module):
    def __init__(self, channels: int, slope: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class RefineNet(ModelMixin, ConfigMixin):
    """Two-level residual U-Net on the pixel-unshuffled (LQ, Ref-FR output) pair.

    ``forward(lq, hq)`` takes both faces as ``float (B, 3, H, W)`` in ``[0, 1]`` (``H, W`` multiples of
    4) and returns ``hq + correction``. The last convolution starts at zero, so an untrained net is
    the identity on ``hq``.

    Args:
        channels (tuple[int, int], default (48, 96)): widths at 1/2 and 1/4 of the face size.
        blocks (tuple[int, int], default (2, 4)): residual blocks per level (the 1/2 level has this
            many on the way down and again on the way up).
        negative_slope (float, default 0.1): LeakyReLU slope.
    """

    @register_to_config
    def __init__(self, channels: Sequence[int] = (48, 96), blocks: Sequence[int] = (2, 4), negative_slope: float = 0.1) -> None:
        super().__init__()
        c0, c1 = (int(c) for c in channels)
        b0, b1 = (int(b) for b in blocks)
        self.inp = nn.Conv2d(6 * 4, c0, 3, padding=1)
        self.enc0 = nn.Sequential(*[_ResBlock(c0, negative_slope) for _ in range(b0)])
        self.down = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.mid = nn.Sequential(*[_ResBlock(c1, negative_slope) for _ in range(b1)])
        self.up = nn.Conv2d(c1, c0 * 4, 1)
        self.dec0 = nn.Sequential(*[_ResBlock(c0, negative_slope) for _ in range(b0)])
        self.out = nn.Conv2d(c0, 3 * 4, 3, padding=1)
        self.act = nn.LeakyReLU(negative_slope)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, lq: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
        if lq.shape != hq.shape or lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f"lq and hq must both be (B, 3, H, W), got {tuple(lq.shape)} and {tuple(hq.shape)}")
        if lq.shape[-1] % 4 or lq.shape[-2] % 4:
            raise ValueError(f"H and W must be multiples of 4, got {tuple(lq.shape[-2:])}")
        x = F.pixel_unshuffle(torch.cat([lq, hq], 1) * 2 - 1, 2)
        e0 = self.enc0(self.act(self.inp(x)))
        m = self.mid(self.act(self.down(e0)))
        d0 = self.dec0(e0 + F.pixel_shuffle(self.up(m), 2))
        return hq + F.pixel_shuffle(self.out(self.act(d0)), 2)


def refine_face(net: RefineNet, lq: np.ndarray, hq: np.ndarray) -> np.ndarray:
    """Run ``net`` on one ``uint8 (S, S, 3)`` (LQ, Ref-FR output) pair; returns ``uint8 (S, S, 3)``.

    Sides that are not multiples of 4 are padded (reflect) and cropped back.
    """
    h, w = lq.shape[:2]
    ph, pw = (-h) % 4, (-w) % 4
    param = next(net.parameters())

    def tensor(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].to(param.device, param.dtype) / 255.0
        return F.pad(t, (0, pw, 0, ph), mode="reflect") if (ph or pw) else t

    with torch.inference_mode():
        out = net(tensor(lq), tensor(hq))[0, :, :h, :w]
    return (out.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class RefinedRefFR(RefFR):
    """The reference transfer followed by :class:`RefineNet` (``name = "reference-transfer+refine"``).

    Args:
        net: a trained :class:`RefineNet` (see :meth:`from_pretrained`).
        size (int, default 512): aligned face side.
        **transfer_kwargs: settings of the :class:`ReferenceTransferRefFR` stage
            (:meth:`ReferenceTransferRefFR.for_size` defaults).
    """

    name = "reference-transfer+refine"

    def __init__(self, net: RefineNet, *, size: int = 512, **transfer_kwargs) -> None:
        self.transfer = ReferenceTransferRefFR.for_size(size, **transfer_kwargs)
        self.size = self.transfer.size
        self.net = net.eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, *, size: int = 512, device: str | torch.device = "cpu", **transfer_kwargs) -> "RefinedRefFR":
        """Load the refiner from a folder with ``config.json`` + safetensors (never a pickle)."""
        folder = Path(path)
        if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
            raise ConfigError(
                f"no refiner weights in '{folder}' (config.json + a .safetensors file expected). Train them with "
                "'python -m face2scene_core.reffr.train_refine' or use the plain 'reference-transfer' Ref-FR."
            )
        net = RefineNet.from_pretrained(str(folder), use_safetensors=True).to(device)
        return cls(net, size=size, **transfer_kwargs)

    def _restore(self, lq_face: np.ndarray, references: list[np.ndarray]) -> np.ndarray:
        return self.restore_with_info(lq_face, references)[0]

    def restore_with_info(self, lq_face: np.ndarray, references: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, dict]:
        """Like :meth:`ReferenceTransferRefFR.restore_with_info`, with the refiner applied to its output."""
        lq = self.check_face(lq_face, "lq_face")
        hq, info = self.transfer.restore_with_info(lq, references)
        return refine_face(self.net, lq, hq), info

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.net.parameters())
        return f"{type(self).__name__}({self.transfer!r}, refiner={n / 1e6:.2f}M params)"


__all__ = ["RefineNet", "RefinedRefFR", "refine_face"]
