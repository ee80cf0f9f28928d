"""Image operations of the degradation model (numpy + OpenCV, no torch).

Every op takes and returns a float image ``np.float32 (H, W, 3)`` (values nominally in [0, 1];
filters and resizes may overshoot slightly, noise and JPEG clip to [0, 1]). Each is a pure
function of its arguments; the noise ops draw only from the ``numpy.random.Generator`` they are
given. ``random_*`` samplers return parameter dataclasses, never images.

Resizing is implemented here (separable, gather-based) rather than with ``cv2.resize`` so that the
sampling grid depends only on the scale factor: output pixel ``i`` reads source position
``(i + 0.5) / factor - 0.5`` whatever the image size. The same operator applied to a crop whose
offset is a multiple of ``1 / factor`` therefore gives exactly the crop of the degraded image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from .params import RESIZE_MODES, NoiseParams, ResizeParams

# Poisson noise: intensities are counted in this many photon levels. Real-ESRGAN uses
# 2**ceil(log2(#distinct values)), which is 256 for any natural 8-bit photo but depends on the
# image content; a constant keeps the operator identical on a photo and on a crop of it.
POISSON_LEVELS = 256
# Keys cubic convolution parameter used by PyTorch and OpenCV bicubic.
BICUBIC_A = -0.75
# Luma weights (ITU-R BT.601), as in cv2.COLOR_RGB2GRAY and torchvision rgb_to_grayscale.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def check_float_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate a float image ``(H, W, 3)`` and return it as contiguous ``float32``."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be a float array of shape (H, W, 3), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{name} must be a float image in [0, 1], got dtype {arr.dtype}; convert uint8 with "
            "face2scene_core.imageio.to_float or use degrade_image()"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


# ----------------------------------------------------------------------------- blur


def filter2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate every channel with ``kernel`` (odd square, float), reflect-101 borders.

    Matches BasicSR's ``filter2D`` (``F.conv2d`` after reflect padding). Returns float32 (H, W, 3).
    """
    img = check_float_image(image)
    k = np.asarray(kernel, dtype=np.float32)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        raise ValueError(f"kernel must be an odd square 2-D array, got shape {k.shape}")
    if k.shape[0] == 1:
        return img * float(k[0, 0])
    return cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT_101)


# ----------------------------------------------------------------------------- resize


def _cubic(t: np.ndarray) -> np.ndarray:
    a = BICUBIC_A
    t = np.abs(t)
    t2, t3 = t * t, t * t * t
    near = (a + 2) * t3 - (a + 3) * t2 + 1
    far = a * t3 - 5 * a * t2 + 8 * a * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def resample_weights(n_in: int, n_out: int, factor: float, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Taps of a 1-D resize: ``out[i] = sum_k w[i, k] * in[idx[i, k]]``.

    Output pixel ``i`` is centred on source coordinate ``(i + 0.5) / factor - 0.5``. ``area`` is the
    exact average over the source interval ``[i / factor, (i + 1) / factor)``; ``bilinear`` and
    ``bicubic`` interpolate without antialiasing. Out-of-range taps are clamped (edge replicate).
    Returns ``idx int64 (n_out, K)`` and ``w float32 (n_out, K)``, rows summing to 1.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize sizes must be >= 1, got n_in={n_in}, n_out={n_out}")
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"resize factor must be a positive number, got {factor!r}")
    i = np.arange(n_out, dtype=np.float64)[:, None]
    if mode == "area":
        start, stop = i / factor, (i + 1) / factor
        taps = int(math.ceil(1.0 / factor)) + 1
        j = np.floor(start) + np.arange(taps)[None, :]
        w = np.clip(np.minimum(j + 1, stop) - np.maximum(j, start), 0.0, None) * factor
    elif mode in ("bilinear", "bicubic"):
        src = (i + 0.5) / factor - 0.5
        base = np.floor(src)
        offsets = np.arange(2) if mode == "bilinear" else np.arange(-1, 3)
        j = base + offsets[None, :]
        d = src - j
        w = np.clip(1.0 - np.abs(d), 0.0, None) if mode == "bilinear" else _cubic(d)
    else:
        raise ValueError(f"resize mode {mode!r} is not one of {RESIZE_MODES}")
    w = w / w.sum(axis=1, keepdims=True)
    idx = np.clip(j, 0, n_in - 1).astype(np.int64)
    return idx, w.astype(np.float32)


def _apply_axis(x: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * x.ndim
    shape[axis] = idx.shape[0]
    out = None
    for k in range(idx.shape[1]):
        wk = w[:, k]
        if not np.any(wk):
            continue
        term = np.take(x, idx[:, k], axis=axis)
        term *= wk.reshape(shape)
        out = term if out is None else np.add(out, term, out=out)
    return out


def resize(
    image: np.ndarray,
    factor: float | tuple[float, float],
    mode: str = "bicubic",
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resize by ``factor`` (one number, or ``(fy, fx)``) with ``area``/``bilinear``/``bicubic``.

    Args:
        image: float32 (H, W, 3).
        factor: scale factor(s) > 0; fixes the sampling grid (see module docstring).
        mode: interpolation, see :func:`resample_weights`.
        size: output ``(height, width)``; default ``max(1, round(H * fy))``, ``max(1, round(W * fx))``.
    Returns float32 (h, w, 3); bicubic may overshoot [0, 1] slightly (callers clip).
    """
    img = check_float_image(image)
    fy, fx = (float(factor), float(factor)) if np.isscalar(factor) else (float(factor[0]), float(factor[1]))
    h_in, w_in = img.shape[:2]
    if size is None:
        size = (max(1, round(h_in * fy)), max(1, round(w_in * fx)))
    h_out, w_out = int(size[0]), int(size[1])
    if (h_out, w_out) == (h_in, w_in) and fy == 1.0 and fx == 1.0:
        return img.copy()
    out = img
    if not (h_out == h_in and fy == 1.0):
        out = _apply_axis(out, *resample_weights(h_in, h_out, fy, mode), axis=0)
    if not (w_out == w_in and fx == 1.0):
        out = _apply_axis(out, *resample_weights(w_in, w_out, fx, mode), axis=1)
    return np.ascontiguousarray(out, dtype=np.float32)


def random_resize(
    rng: np.random.Generator,
    *,
    resize_prob: Sequence[float],
    resize_range: Sequence[float],
    modes: Sequence[str] = RESIZE_MODES,
) -> ResizeParams:
    """Draw up / down / keep with ``resize_prob``; up: U(1, hi), down: U(lo, 1), keep: 1; a uniform mode."""
    probs = np.asarray(resize_prob, dtype=np.float64)
    if probs.shape != (3,) or np.any(probs < 0) or probs.sum() <= 0:
        raise ValueError(f"resize_prob must be 3 non-negative weights (up, down, keep), got {tuple(resize_prob)!r}")
    kind = int(rng.choice(3, p=probs / probs.sum()))
    lo, hi = float(resize_range[0]), float(resize_range[1])
    scale = float(rng.uniform(1.0, hi)) if kind == 0 else float(rng.uniform(lo, 1.0)) if kind == 1 else 1.0
    mode = str(modes[int(rng.integers(len(modes)))])
    return ResizeParams(scale=scale, mode=mode)


# ----------------------------------------------------------------------------- noise


def add_gaussian_noise(image: np.ndarray, sigma: float, *, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, (sigma/255)^2) noise (one value for all channels when ``gray``) and clip to [0, 1]."""
    img = check_float_image(image)
    if sigma < 0:
        raise ValueError(f"gaussian noise sigma must be >= 0, got {sigma!r}")
    h, w = img.shape[:2]
    noise = rng.standard_normal((h, w, 1 if gray else 3), dtype=np.float32) * np.float32(sigma / 255.0)
    return np.clip(img + noise, 0.0, 1.0)


def add_poisson_noise(image: np.ndarray, scale: float, *, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """Add ``scale`` x shot noise and clip to [0, 1].

    The image is quantised to 1/255 steps and counted in :data:`POISSON_LEVELS` photon levels;
    the noise is ``Poisson(x * L) / L - x``. With ``gray`` the noise is computed on the luma and
    added equally to all channels.
    """
    img = check_float_image(image)
    if scale < 0:
        raise ValueError(f"poisson noise scale must be >= 0, got {scale!r}")
    base = np.clip(img, 0.0, 1.0)
    if gray:
        base = (base @ np.asarray(LUMA_WEIGHTS, dtype=np.float32))[..., None]
    base = np.round(base * 255.0) / 255.0
    counts = rng.poisson(base.astype(np.float64) * POISSON_LEVELS)
    noise = (counts / POISSON_LEVELS - base).astype(np.float32)
    return np.clip(img + noise * np.float32(scale), 0.0, 1.0)


def add_noise(image: np.ndarray, params: NoiseParams | None, rng: np.random.Generator) -> np.ndarray:
    """Apply a :class:`NoiseParams` (Gaussian first, then Poisson); returns float32 in [0, 1]."""
    out = check_float_image(image)
    if params is None:
        return out
    if params.gaussian_sigma > 0:
        out = add_gaussian_noise(out, params.gaussian_sigma, gray=params.gaussian_gray, rng=rng)
    if params.poisson_scale > 0:
        out = add_poisson_noise(out, params.poisson_scale, gray=params.poisson_gray, rng=rng)
    return out


def random_noise(
    rng: np.random.Generator,
    *,
    gaussian_prob: float,
    sigma_range: Sequence[float],
    poisson_scale_range: Sequence[float],
    gray_prob: float,
) -> NoiseParams:
    """Gaussian noise (sigma ~ U(sigma_range), 0..255 units) with ``gaussian_prob``, else Poisson
    (scale ~ U(poisson_scale_range)); grey with ``gray_prob``."""
    if rng.uniform() < gaussian_prob:
        sigma = float(rng.uniform(sigma_range[0], sigma_range[1]))
        return NoiseParams(gaussian_sigma=sigma, gaussian_gray=bool(rng.uniform() < gray_prob))
    scale = float(rng.uniform(poisson_scale_range[0], poisson_scale_range[1]))
    return NoiseParams(poisson_scale=scale, poisson_gray=bool(rng.uniform() < gray_prob))


# ----------------------------------------------------------------------------- JPEG


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG (OpenCV/libjpeg, 4:2:0) at ``quality`` 1..100.

    The image is clipped to [0, 1] and rounded to 8 bits first. Returns float32 (H, W, 3) in [0, 1].
    """
    img = check_float_image(image)
    q = int(quality)
    if q != quality or not 1 <= q <= 100:
        raise ValueError(f"jpeg quality must be an integer in 1..100, got {quality!r}")
    u8 = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise RuntimeError(f"OpenCV failed to JPEG-encode an image of shape {u8.shape}")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return decoded[..., ::-1].astype(np.float32) / 255.0


def random_jpeg_quality(rng: np.random.Generator, quality_range: Sequence[float]) -> int:
    """A JPEG quality drawn uniformly from ``quality_range`` and rounded to an integer."""
    lo, hi = float(quality_range[0]), float(quality_range[1])
    if not 1 <= lo <= hi <= 100:
        raise ValueError(f"jpeg range must satisfy 1 <= lo <= hi <= 100, got {tuple(quality_range)!r}")
    return int(round(rng.uniform(lo, hi)))


__all__ = [
    "POISSON_LEVELS",
    "check_float_image",
    "filter2d",
    "resample_weights",
    "resize",
    "random_resize",
    "add_gaussian_noise",
    "add_poisson_noise",
    "add_noise",
    "random_noise",
    "jpeg_compress",
    "random_jpeg_quality",
]
