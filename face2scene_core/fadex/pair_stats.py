"""Classic statistics of a face pair, read beside FaDeX's pooled features by its embedding head (``pair_stats``).

FaDeX's encoder compares the degraded face with the restored one; where the restored face is the Ref-FR's, its own
errors (which differ from photo to photo) blur that comparison, most for heavy mixes of down-scaling, blur, noise
and JPEG. These 14 numbers are measured on the degraded face itself (which is the same whichever HQ face it is paired
with) and on its difference from the HQ face, in luma and chroma, on the 0-255 scale:

* JPEG blockiness along rows and columns: the mean absolute step between neighbouring pixels on the strongest of the
  8 phases of an 8 px grid against the median phase (log ratio; 0 without a grid);
* noise: the robust (median absolute deviation) level of the luma's high-pass (Gaussian sigma 1), and its log
  ratio to the HQ face's;
* detail: the log energy of three luma bands (differences of Gaussians at sigma 0 / 0.7 / 1.5 / 3), and their log
  ratios to the HQ face's (blur, and down-up scaling, remove the upper bands);
* chroma noise: the robust level of each chroma channel's high-pass, and its log ratio to the HQ face's.

All are differentiable almost everywhere but are used as fixed inputs (no parameters). Computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

N_PAIR_STATS = 14
"""Numbers per pair (:func:`pair_stats`)."""

_EPS = 1e-3
_MAD_TO_SIGMA = 0.6745


def _ycrcb(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Luma and the two chroma channels (ITU-R BT.601, OpenCV's YCrCb) of ``(B, 3, H, W)`` in 0-255."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, (r - y) * 0.713 + 128.0, (b - y) * 0.564 + 128.0


def _gauss(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` per channel, OpenCV's kernel size for float images, mirrored
    borders."""
    k = int(round(sigma * 8 + 1)) | 1
    r, c = k // 2, x.shape[1]
    t = torch.arange(k, dtype=x.dtype, device=x.device) - r
    w = torch.exp(-t * t / (2 * sigma * sigma))
    w = w / w.sum()
    h = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(F.pad(h, (0, 0, r, r), mode="reflect"), w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _median(x: torch.Tensor) -> torch.Tensor:
    """Per-row median of ``(N, M)`` (the lower middle value for an even count)."""
    return x.median(dim=1).values


def _noise(x: torch.Tensor) -> torch.Tensor:
    """Robust noise level ``(B, C)`` of each channel's high-pass (log of its median absolute deviation / 0.6745)."""
    r = (x - _gauss(x, 1.0)).flatten(2).flatten(0, 1)
    mad = _median((r - _median(r)[:, None]).abs()).view(x.shape[:2])
    return torch.log(mad / _MAD_TO_SIGMA + _EPS)


def _blockiness(y: torch.Tensor, dim: int) -> torch.Tensor:
    """Strongest of the 8 grid phases of the mean absolute step along ``dim`` (1: rows, 2: columns) of ``(B, H, W)``,
    against the median phase."""
    d = torch.diff(y, dim=dim).abs().mean(dim=3 - dim)  # (B, L - 1): the mean step at each position
    phases = torch.stack([d[:, p::8].mean(dim=1) for p in range(min(8, d.shape[1]))], dim=1)
    return torch.log((phases.amax(dim=1) + _EPS) / (phases.quantile(0.5, dim=1) + _EPS))


def _bands(y: torch.Tensor) -> torch.Tensor:
    g = [y] + [_gauss(y, s) for s in (0.7, 1.5, 3.0)]
    return torch.cat([torch.log(((g[i] - g[i + 1]) ** 2).mean(dim=(2, 3)) + _EPS) for i in range(3)], dim=1)


def face_stats(rgb: torch.Tensor, *, blockiness: bool = True) -> torch.Tensor:
    """One face's side of :func:`pair_stats`, ``(B, 8)``: blockiness along rows and columns (zeros without
    ``blockiness``), luma noise, three luma band energies, two chroma noise levels."""
    y, cr, cb = _ycrcb(rgb.float() * 255.0)
    noise = _noise(torch.stack([y, cr, cb], dim=1))
    block = (torch.stack([_blockiness(y, 1), _blockiness(y, 2)], dim=1) if blockiness
             else noise.new_zeros(len(noise), 2))
    return torch.cat([block, noise[:, :1], _bands(y[:, None]), noise[:, 1:]], dim=1)


def combine(lq: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
    """:func:`pair_stats` from the two sides' :func:`face_stats`."""
    return torch.cat([lq[:, :3], lq[:, 2:3] - hq[:, 2:3], lq[:, 3:6], lq[:, 3:6] - hq[:, 3:6], lq[:, 6:8],
                      lq[:, 6:8] - hq[:, 6:8]], dim=1)


@torch.no_grad()
def pair_stats(lq: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
    """The :data:`N_PAIR_STATS` statistics ``(B, 14)`` of face pairs ``lq, hq (B, 3, H, W)`` in ``[0, 1]``
    (``H, W >= 32``)."""
    if lq.shape != hq.shape or lq.dim() != 4 or lq.shape[1] != 3:
        raise ValueError(f"pair_stats needs two (B, 3, H, W) batches of one shape, got {tuple(lq.shape)} and "
                         f"{tuple(hq.shape)}")
    return combine(face_stats(lq), face_stats(hq, blockiness=False))


__all__ = ["N_PAIR_STATS", "combine", "face_stats", "pair_stats"]
