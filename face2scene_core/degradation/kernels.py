"""Blur kernels of the Real-ESRGAN degradation model, and their samplers.

Every kernel is an odd-sized ``float32 (size, size)`` array that sums to 1, centred on
``size // 2``. Coordinates: ``x`` runs along columns, ``y`` along rows (downwards); an
anisotropic kernel's first axis (``sigma_x``) points at ``angle`` radians from +x toward +y.

Pure builders take fixed parameters; ``random_*`` samplers take an explicit
``numpy.random.Generator`` and return :class:`KernelParams` (parameters, not arrays), so an
operator stays small, serialisable and size independent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import j1

from .params import KERNEL_KINDS, KernelParams


def _check_size(size: int) -> int:
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be an odd positive integer, got {size!r}")
    return int(size)


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """``d^T Sigma^-1 d`` on the kernel grid, ``Sigma = R diag(sx^2, sy^2) R^T``; float64 (size, size)."""
    size = _check_size(size)
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"kernel sigmas must be > 0, got sigma_x={sigma_x!r}, sigma_y={sigma_y!r}")
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)  # xx varies along columns, yy along rows
    c, s = math.cos(angle), math.sin(angle)
    u = c * xx + s * yy  # coordinate along the first axis
    v = -s * xx + c * yy  # along the second axis
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalised(kernel: np.ndarray) -> np.ndarray:
    total = kernel.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("kernel parameters give a kernel with no mass; use a larger sigma or size")
    return (kernel / total).astype(np.float32)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, angle: float = 0.0) -> np.ndarray:
    """Bivariate Gaussian ``exp(-q/2)``; isotropic when ``sigma_y`` is None (or equal) and angle 0.

    Returns ``float32 (size, size)`` summing to 1.
    """
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, angle)
    return _normalised(np.exp(-0.5 * q))


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, angle: float = 0.0, beta: float = 1.0
) -> np.ndarray:
    """Generalized Gaussian ``exp(-q^beta / 2)``: beta < 1 heavier tails, beta > 1 flatter top.

    Returns ``float32 (size, size)`` summing to 1.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, angle)
    return _normalised(np.exp(-0.5 * np.power(q, beta)))


def plateau_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, angle: float = 0.0, beta: float = 1.0
) -> np.ndarray:
    """Plateau-shaped kernel ``1 / (1 + q^beta)`` (flat top, slow decay).

    Returns ``float32 (size, size)`` summing to 1.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, angle)
    return _normalised(1.0 / (1.0 + np.power(q, beta)))


def circular_lowpass_kernel(size: int, omega: float) -> np.ndarray:
    """2-D sinc (ideal circular low-pass with cut-off ``omega`` rad/pixel), truncated to ``size``.

    ``k(r) = omega * J1(omega r) / (2 pi r)``, ``k(0) = omega^2 / (4 pi)``; it has negative lobes,
    so it causes the ringing / overshoot artifacts seen in real images. Returns ``float32
    (size, size)`` summing to 1.
    """
    size = _check_size(size)
    if not 0 < omega <= math.pi + 1e-9:
        raise ValueError(f"sinc omega must be in (0, pi], got {omega!r}")
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    r = np.hypot(xx, yy)
    safe_r = np.where(r == 0, 1.0, r)
    kernel = np.where(r == 0, omega**2 / (4 * math.pi), omega * j1(omega * safe_r) / (2 * math.pi * safe_r))
    return _normalised(kernel)


def motion_kernel(size: int, length: float, angle: float = 0.0, samples: int = 8) -> np.ndarray:
    """Linear motion blur: a segment of ``length`` pixels through the centre at ``angle`` (radians from +x
    toward +y), rasterised with ``samples`` x ``samples`` supersampling per pixel and unit width, so that
    fractional lengths and any angle give a smooth, centred kernel. Returns ``float32 (size, size)`` summing to 1.
    """
    size = _check_size(size)
    if not 1.0 <= length <= size:
        raise ValueError(f"motion length must be in [1, size={size}], got {length!r}")
    half = size // 2
    sub = (np.arange(size * samples, dtype=np.float64) + 0.5) / samples - 0.5 - half
    xx, yy = np.meshgrid(sub, sub)
    c, s = math.cos(angle), math.sin(angle)
    along, across = c * xx + s * yy, -s * xx + c * yy
    inside = (np.abs(along) <= length / 2.0) & (np.abs(across) <= 0.5)
    kernel = inside.reshape(size, samples, size, samples).mean(axis=(1, 3))
    return _normalised(kernel)


def make_kernel(params: KernelParams) -> np.ndarray:
    """Build the ``float32 (size, size)`` kernel (sums to 1) that ``params`` describes."""
    k = params.kind
    if k == "sinc":
        return circular_lowpass_kernel(params.size, params.omega)
    if k == "motion":
        return motion_kernel(params.size, params.sigma_x, params.angle)
    if k in ("iso", "aniso"):
        return gaussian_kernel(params.size, params.sigma_x, params.sigma_y, params.angle)
    if k.startswith("generalized"):
        return generalized_gaussian_kernel(params.size, params.sigma_x, params.sigma_y, params.angle, params.beta)
    if k.startswith("plateau"):
        return plateau_kernel(params.size, params.sigma_x, params.sigma_y, params.angle, params.beta)
    raise ValueError(f"unknown kernel kind {k!r}; expected one of {KERNEL_KINDS}")


# ----------------------------------------------------------------------------- samplers


def odd_sizes(size_range: Sequence[int]) -> list[int]:
    """All odd sizes in the inclusive range ``(lo, hi)``, e.g. (7, 21) -> [7, 9, ..., 21]."""
    lo, hi = int(size_range[0]), int(size_range[1])
    sizes = [s for s in range(lo, hi + 1) if s % 2 == 1]
    if not sizes or lo < 1:
        raise ValueError(f"kernel size range {tuple(size_range)!r} contains no odd size >= 1")
    return sizes


def random_kernel_size(rng: np.random.Generator, size_range: Sequence[int]) -> int:
    """An odd kernel size drawn uniformly from ``size_range`` (inclusive)."""
    sizes = odd_sizes(size_range)
    return int(sizes[int(rng.integers(len(sizes)))])


def random_beta(rng: np.random.Generator, beta_range: Sequence[float]) -> float:
    """Shape exponent: when the range straddles 1, half the draws fall below 1 and half above
    (BasicSR's rule, so light and heavy tails are equally likely); otherwise uniform."""
    lo, hi = float(beta_range[0]), float(beta_range[1])
    if not 0 < lo <= hi:
        raise ValueError(f"beta range must satisfy 0 < lo <= hi, got {tuple(beta_range)!r}")
    if lo < 1.0 < hi:
        return float(rng.uniform(lo, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, hi))
    return float(rng.uniform(lo, hi))


def random_mixed_kernel(
    rng: np.random.Generator,
    *,
    size: int,
    kernel_list: Sequence[str],
    kernel_prob: Sequence[float],
    sigma_range: Sequence[float],
    rotation_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
) -> KernelParams:
    """Draw a kernel kind with ``kernel_prob`` and its parameters (BasicSR ``random_mixed_kernels``).

    Isotropic kinds use one sigma and angle 0; anisotropic kinds draw ``sigma_x`` and ``sigma_y``
    independently from ``sigma_range`` and an angle from ``rotation_range`` (radians).
    """
    if len(kernel_list) != len(kernel_prob) or not kernel_list:
        raise ValueError(f"kernel_list {tuple(kernel_list)!r} and kernel_prob {tuple(kernel_prob)!r} differ in length")
    probs = np.asarray(kernel_prob, dtype=np.float64)
    if np.any(probs < 0) or probs.sum() <= 0:
        raise ValueError(f"kernel_prob must be non-negative and not all 0, got {tuple(kernel_prob)!r}")
    kind = str(kernel_list[int(rng.choice(len(kernel_list), p=probs / probs.sum()))])
    if kind not in KERNEL_KINDS or kind == "sinc":
        raise ValueError(f"kernel kind {kind!r} cannot be drawn by random_mixed_kernel")
    sigma_x = float(rng.uniform(sigma_range[0], sigma_range[1]))
    isotropic = kind == "iso" or kind.endswith("_iso")
    if isotropic:
        sigma_y, angle = sigma_x, 0.0
    else:
        sigma_y = float(rng.uniform(sigma_range[0], sigma_range[1]))
        angle = float(rng.uniform(rotation_range[0], rotation_range[1]))
    if kind.startswith("generalized"):
        beta = random_beta(rng, betag_range)
    elif kind.startswith("plateau"):
        beta = random_beta(rng, betap_range)
    else:
        beta = 1.0
    return KernelParams(kind=kind, size=size, sigma_x=sigma_x, sigma_y=sigma_y, angle=angle, beta=beta)


def random_sinc_kernel(rng: np.random.Generator, *, size: int, omega_range: Sequence[float]) -> KernelParams:
    """A sinc kernel of the given size with cut-off drawn uniformly from ``omega_range`` (rad/pixel)."""
    omega = float(rng.uniform(omega_range[0], omega_range[1]))
    return KernelParams(kind="sinc", size=size, omega=omega)


__all__ = [
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "plateau_kernel",
    "circular_lowpass_kernel",
    "make_kernel",
    "motion_kernel",
    "odd_sizes",
    "random_kernel_size",
    "random_beta",
    "random_mixed_kernel",
    "random_sinc_kernel",
]
