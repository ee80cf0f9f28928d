"""Full-reference metrics on ``uint8 (H, W, 3)`` RGB images.

``psnr`` and ``ssim`` take ``channel="y"`` (ITU-R BT.601 luma, the convention of SR papers) or ``"rgb"``;
the choice is always stated in reports. ``face_excluded`` composites the ground-truth face into the output with
a soft mask before measuring, as the paper's Table 3 does, so a metric reflects the scene alone.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma in [16, 235] (float64) of an RGB uint8/float-255 image."""
    x = image.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _prep(a: np.ndarray, b: np.ndarray, channel: str, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if channel not in ("y", "rgb"):
        raise ValueError(f"channel must be 'y' or 'rgb', got {channel!r}")
    if crop_border:
        a, b = a[crop_border:-crop_border, crop_border:-crop_border], b[crop_border:-crop_border, crop_border:-crop_border]
    if channel == "y":
        return rgb_to_y(a), rgb_to_y(b)
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, *, channel: str = "y", crop_border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB (peak 255). Identical images give ``inf``."""
    x, y = _prep(a, b, channel, crop_border)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, *, channel: str = "y", crop_border: int = 0) -> float:
    """Structural similarity (Wang et al. 2004; Gaussian window sigma 1.5), mean over channels."""
    x, y = _prep(a, b, channel, crop_border)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for c in range(x.shape[2]):
        u, v = x[..., c], y[..., c]
        f = lambda z: gaussian_filter(z, 1.5, truncate=3.5)  # noqa: E731  11x11 window
        mu_u, mu_v = f(u), f(v)
        s_uu, s_vv, s_uv = f(u * u) - mu_u**2, f(v * v) - mu_v**2, f(u * v) - mu_u * mu_v
        m = ((2 * mu_u * mu_v + c1) * (2 * s_uv + c2)) / ((mu_u**2 + mu_v**2 + c1) * (s_uu + s_vv + c2))
        vals.append(float(m[5:-5, 5:-5].mean()) if min(m.shape) > 10 else float(m.mean()))
    return float(np.mean(vals))


def face_excluded(output: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask * gt + (1 - mask) * output``: paste the GT face in (``mask`` float (H, W) in [0, 1])."""
    m = np.clip(mask.astype(np.float32), 0, 1)[..., None]
    return (m * gt.astype(np.float32) + (1 - m) * output.astype(np.float32) + 0.5).astype(np.uint8)


def mean_ci(values, *, z: float = 1.96) -> dict:
    """Mean and normal-approximation 95% confidence interval of a list of numbers."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(v.mean())
    half = float(z * v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": int(v.size)}
