"""Spatially varying blur (paper §9.8): a position-dependent Gaussian PSF field.

The blur is mild near the frame centre and grows toward the corners, like lens field curvature
or a tilted focal plane. The PSF at normalised radius ``r`` (0 at the centre, 1 at a corner) is an
isotropic Gaussian with ``sigma(r) = sigma_center + (sigma_corner - sigma_center) * r ** power``.
It is rendered as a per-pixel linear blend between ``levels`` uniformly blurred copies whose
sigmas are evenly spaced between ``sigma_center`` and ``sigma_corner`` (the usual way to apply a
smoothly varying PSF field without a per-pixel convolution).
"""

from __future__ import annotations

import cv2
import numpy as np

from .ops import check_float_image


def radius_map(
    height: int, width: int, region: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """Normalised distance of every pixel to the frame centre: float32 (height, width) in [0, 1].

    ``region = (x0, y0, frame_width, frame_height)`` says the image is a crop at ``(x0, y0)`` of a
    larger frame; radii are then measured in that frame, so a face crop gets the blur it has in
    the full photo. Default: the image is the whole frame.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be >= 1, got {height}x{width}")
    if region is None:
        x0, y0, fw, fh = 0, 0, width, height
    else:
        if len(region) != 4:
            raise ValueError(f"region must be (x0, y0, frame_width, frame_height), got {region!r}")
        x0, y0, fw, fh = (int(v) for v in region)
        if fw < 1 or fh < 1:
            raise ValueError(f"region frame size must be >= 1, got {region!r}")
    cy, cx = (fh - 1) / 2.0, (fw - 1) / 2.0
    half_diag = max(float(np.hypot(cx, cy)), 1e-6)
    ys = (np.arange(height, dtype=np.float64) + y0 - cy)[:, None]
    xs = (np.arange(width, dtype=np.float64) + x0 - cx)[None, :]
    return np.clip(np.hypot(xs, ys) / half_diag, 0.0, 1.0).astype(np.float32)


def _blur(image: np.ndarray, sigma: float, kernel_size: int) -> np.ndarray:
    """Isotropic Gaussian blur, separably: equals ``filter2d(image, gaussian_kernel(size, sigma))``."""
    if sigma <= 0:
        return image
    half = kernel_size // 2
    g = np.exp(-0.5 * (np.arange(-half, half + 1, dtype=np.float64) / sigma) ** 2)
    g = (g / g.sum()).astype(np.float32)
    return cv2.sepFilter2D(image, -1, g, g, borderType=cv2.BORDER_REFLECT_101)


def spatially_varying_blur(
    image: np.ndarray,
    *,
    sigma_center: float,
    sigma_corner: float,
    kernel_size: int = 21,
    levels: int = 6,
    power: float = 2.0,
    region: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Blur ``image`` with a Gaussian whose sigma grows from the centre to the corners.

    Args:
        image: float32 (H, W, 3) in [0, 1].
        sigma_center: sigma (pixels, >= 0) at the frame centre; 0 leaves the centre sharp.
        sigma_corner: sigma (pixels, >= 0) at the corners.
        kernel_size: odd side of the Gaussian kernels (about 6 x the largest sigma keeps them whole).
        levels: number of uniformly blurred copies blended per pixel (>= 2).
        power: radial profile exponent (> 0); 2 keeps a wide sharp centre, 1 grows linearly.
        region: ``(x0, y0, frame_width, frame_height)`` when ``image`` is a crop of a larger frame.
    Returns float32 (H, W, 3).
    """
    img = check_float_image(image)
    if sigma_center < 0 or sigma_corner < 0:
        raise ValueError(f"sigmas must be >= 0, got sigma_center={sigma_center!r}, sigma_corner={sigma_corner!r}")
    if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
    if int(levels) != levels or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    if sigma_center == sigma_corner:
        return _blur(img, float(sigma_center), int(kernel_size)).copy()

    r = radius_map(img.shape[0], img.shape[1], region)
    # position of each pixel's sigma on the level axis, in [0, levels - 1]; a tent weight per
    # level is exactly linear interpolation between the two nearest blurred copies
    t = np.power(r, power) * (levels - 1)
    sigmas = np.linspace(sigma_center, sigma_corner, int(levels))
    out = np.zeros_like(img)
    for level in range(int(levels)):
        weight = np.clip(1.0 - np.abs(t - level), 0.0, None)
        if not np.any(weight):
            continue
        out += _blur(img, float(sigmas[level]), int(kernel_size)) * weight[..., None]
    return out


__all__ = ["radius_map", "spatially_varying_blur"]
