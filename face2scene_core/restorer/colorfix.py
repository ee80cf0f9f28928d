"""Colour correction of a restored image towards its input (StableSR / S3Diff style).

One-step diffusion restorers can shift global colour. Both fixes keep the restored image's
detail and take the colour from the input:

- ``"wavelet"``: replace the low-frequency band (a 5-level dilated a-trous blur pyramid) of the output
  by that of the input; keeps local detail, fixes colour casts and brightness drifts.
- ``"adain"``: match each channel's mean and standard deviation to the input's.

All functions take tensor images ``(B, 3, H, W)`` float in ``[0, 1]`` of the same size and return
the same shape, clamped to ``[0, 1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOR_FIXES = ("wavelet", "adain")


def _check_pair(content: torch.Tensor, style: torch.Tensor) -> None:
    if content.ndim != 4 or style.ndim != 4:
        raise ValueError(f"color fix expects (B, C, H, W) tensors, got {tuple(content.shape)} and {tuple(style.shape)}")
    if content.shape != style.shape:
        raise ValueError(f"color fix needs images of the same shape, got {tuple(content.shape)} and {tuple(style.shape)}")


def adain_color_fix(content: torch.Tensor, style: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    """Per-channel mean/std of ``content`` (restored) matched to ``style`` (input)."""
    _check_pair(content, style)
    c_mean, c_std = content.mean(dim=(-2, -1), keepdim=True), content.std(dim=(-2, -1), keepdim=True)
    s_mean, s_std = style.mean(dim=(-2, -1), keepdim=True), style.std(dim=(-2, -1), keepdim=True)
    return ((content - c_mean) / (c_std + eps) * s_std + s_mean).clamp(0, 1)


def _blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """3x3 binomial blur with ``dilation``, replicate padding (one level of the a-trous transform)."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (k[:, None] * k[None, :] / 16.0).expand(x.shape[1], 1, 3, 3)
    x = F.pad(x, (dilation,) * 4, mode="replicate")  # replicate works for any pad size
    return F.conv2d(x, kernel, groups=x.shape[1], dilation=dilation)


def wavelet_decompose(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``x`` into (high, low) frequency parts with ``high + low == x``.

    The low band is the result of ``levels`` successive blurs with dilation 1, 2, 4, ...
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    low = x
    for i in range(levels):
        low = _blur(low, 2**i)
    return x - low, low


def wavelet_color_fix(content: torch.Tensor, style: torch.Tensor, *, levels: int = 5) -> torch.Tensor:
    """High frequencies of ``content`` (restored) + low frequencies of ``style`` (input)."""
    _check_pair(content, style)
    high, _ = wavelet_decompose(content, levels)
    _, low = wavelet_decompose(style, levels)
    return (high + low).clamp(0, 1)


def apply_color_fix(content: torch.Tensor, style: torch.Tensor, method: str | None) -> torch.Tensor:
    """Dispatch on ``method``: ``None`` (unchanged), ``"wavelet"`` or ``"adain"``."""
    if method is None:
        return content
    if method == "wavelet":
        return wavelet_color_fix(content, style)
    if method == "adain":
        return adain_color_fix(content, style)
    raise ValueError(f"color_fix must be None or one of {COLOR_FIXES}, got {method!r}")


__all__ = ["COLOR_FIXES", "adain_color_fix", "wavelet_color_fix", "wavelet_decompose", "apply_color_fix"]
