"""The sampled values of one degradation operator, as plain JSON-serialisable dataclasses.

A :class:`DegradationParams` is a *size-independent* description of one Real-ESRGAN second-order
operator: kernels are stored as their parameters (in pixels), resizes as relative scale factors,
noise as strengths plus a seed. Applying the same params to a whole photo and to a crop of it
gives the same degradation (up to borders, resampling phase and the noise realisation), which
is the premise of Face2Scene: the face's degradation equals the scene's.

All dataclasses are frozen (an operator never changes once sampled) and validate their values:
a bad value raises ``ValueError`` naming it. ``DegradationParams.from_dict`` turns every problem
in a user-supplied dict into a :class:`~face2scene_core.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from ..config import from_dict as _config_from_dict
from ..config import to_dict as _config_to_dict
from ..errors import ConfigError

KernelKind = Literal[
    "iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso", "sinc", "motion"
]
ResizeMode = Literal["area", "bilinear", "bicubic"]
FinalOrder = Literal["resize_first", "jpeg_first"]

KERNEL_KINDS: tuple[str, ...] = (
    "iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso", "sinc", "motion"
)
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")
FINAL_ORDERS: tuple[str, ...] = ("resize_first", "jpeg_first")


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class KernelParams:
    """Parameters of one blur kernel (the array is built by :func:`kernels.make_kernel`).

    Args:
        kind: one of ``iso``, ``aniso``, ``generalized_iso``, ``generalized_aniso``,
            ``plateau_iso``, ``plateau_aniso`` (bivariate Gaussian family), ``sinc``
            (circular low-pass) or ``motion`` (linear camera shake: a line of length ``sigma_x`` pixels
            at ``angle``, box profile, anti-aliased).
        size: odd kernel side in pixels (Real-ESRGAN samples 7..21).
        sigma_x: standard deviation along the kernel's first principal axis, pixels (> 0;
            unused by ``sinc``).
        sigma_y: along the second axis; for isotropic kinds it equals ``sigma_x`` (0 means "same").
        angle: rotation of the first axis in radians, measured from +x (columns) toward +y (rows);
            0 for isotropic kinds.
        beta: shape exponent of the generalized Gaussian / plateau kinds (> 0; 1 otherwise).
        omega: cut-off angular frequency of ``sinc`` in radians/pixel, in (0, pi].
    """

    kind: KernelKind
    size: int
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    angle: float = 0.0
    beta: float = 1.0
    omega: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KERNEL_KINDS:
            raise ValueError(f"kernel kind {self.kind!r} is not one of {KERNEL_KINDS}")
        size = int(self.size)
        if size != self.size or size < 1 or size % 2 == 0:
            raise ValueError(f"kernel size must be an odd positive integer, got {self.size!r}")
        _set(self, "size", size)
        for name in ("sigma_x", "sigma_y", "angle", "beta", "omega"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"kernel {name} must be finite, got {value!r}")
            _set(self, name, value)
        if self.kind == "motion":
            if not 1.0 <= self.sigma_x <= self.size:
                raise ValueError(f"motion kernel length (sigma_x) must be in [1, size={self.size}], got {self.sigma_x!r}")
            _set(self, "sigma_y", 0.0)
            return
        if self.kind == "sinc":
            if not 0.0 < self.omega <= math.pi + 1e-9:
                raise ValueError(f"sinc kernel omega must be in (0, pi], got {self.omega!r}")
            return
        if self.sigma_x <= 0:
            raise ValueError(f"kernel sigma_x must be > 0, got {self.sigma_x!r}")
        if self.kind.endswith("_iso") or self.kind == "iso":
            if self.sigma_y == 0.0:
                _set(self, "sigma_y", self.sigma_x)
            if self.sigma_y != self.sigma_x or self.angle != 0.0:
                raise ValueError(
                    f"isotropic kernel {self.kind!r} needs sigma_y == sigma_x and angle == 0, "
                    f"got sigma_x={self.sigma_x}, sigma_y={self.sigma_y}, angle={self.angle}"
                )
        elif self.sigma_y <= 0:
            raise ValueError(f"kernel sigma_y must be > 0, got {self.sigma_y!r}")
        if self.beta <= 0:
            raise ValueError(f"kernel beta must be > 0, got {self.beta!r}")

    @property
    def isotropic(self) -> bool:
        """True for kinds whose kernel is rotation invariant (``*iso`` and ``sinc``)."""
        return self.kind == "sinc" or self.kind == "iso" or self.kind.endswith("_iso")


@dataclass(frozen=True)
class ResizeParams:
    """One random resize.

    Args:
        scale: target scale factor. In stage 1 it is relative to the input image; in stage 2 it is
            relative to the final low-resolution size (input / ``DegradationParams.scale``), exactly
            as Real-ESRGAN does (so "keep" in stage 2 means "at the final LR size").
        mode: ``area`` (exact box average), ``bilinear`` or ``bicubic`` (Keys, a = -0.75), the
            latter two without antialiasing like ``torch.nn.functional.interpolate``.
    """

    scale: float = 1.0
    mode: ResizeMode = "bilinear"

    def __post_init__(self) -> None:
        scale = float(self.scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"resize scale must be a positive number, got {self.scale!r}")
        _set(self, "scale", scale)
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"resize mode {self.mode!r} is not one of {RESIZE_MODES}")


@dataclass(frozen=True)
class NoiseParams:
    """Additive noise of one stage (either or both parts may be active).

    Args:
        gaussian_sigma: standard deviation of Gaussian noise in 0..255 units (0 = none).
        gaussian_gray: same noise value on the three channels (grey noise) instead of per channel.
        poisson_scale: multiplier of shot (Poisson) noise (0 = none); Real-ESRGAN samples 0.05..3.
        poisson_gray: shot noise computed on the luma and added to all channels.
    """

    gaussian_sigma: float = 0.0
    gaussian_gray: bool = False
    poisson_scale: float = 0.0
    poisson_gray: bool = False

    def __post_init__(self) -> None:
        for name in ("gaussian_sigma", "poisson_scale"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"noise {name} must be a number >= 0, got {getattr(self, name)!r}")
            _set(self, name, value)
        _set(self, "gaussian_gray", bool(self.gaussian_gray))
        _set(self, "poisson_gray", bool(self.poisson_gray))

    @property
    def kinds(self) -> tuple[str, ...]:
        """The active noise types, in the order they are applied (``gaussian`` then ``poisson``)."""
        return tuple(k for k, v in (("gaussian", self.gaussian_sigma), ("poisson", self.poisson_scale)) if v > 0)


@dataclass(frozen=True)
class SpatialBlurParams:
    """A position-dependent Gaussian blur (paper §9.8): mild at the centre, strong at the corners.

    Args:
        sigma_center: Gaussian sigma at the frame centre, pixels (>= 0; 0 = sharp).
        sigma_corner: sigma at the frame corners, pixels (>= 0).
        kernel_size: odd kernel side of every blurred level.
        levels: number of blurred copies the per-pixel sigma is interpolated between (>= 2).
        power: sigma grows as ``r ** power`` with the normalised radius ``r`` in [0, 1].
    """

    sigma_center: float = 0.5
    sigma_corner: float = 2.5
    kernel_size: int = 21
    levels: int = 6
    power: float = 2.0

    def __post_init__(self) -> None:
        for name in ("sigma_center", "sigma_corner", "power"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"spatial blur {name} must be a number >= 0, got {getattr(self, name)!r}")
            _set(self, name, value)
        if self.power == 0:
            raise ValueError("spatial blur power must be > 0, got 0")
        size = int(self.kernel_size)
        if size != self.kernel_size or size < 1 or size % 2 == 0:
            raise ValueError(f"spatial blur kernel_size must be an odd positive integer, got {self.kernel_size!r}")
        _set(self, "kernel_size", size)
        levels = int(self.levels)
        if levels != self.levels or levels < 2:
            raise ValueError(f"spatial blur levels must be an integer >= 2, got {self.levels!r}")
        _set(self, "levels", levels)


@dataclass(frozen=True)
class StageParams:
    """One stage of the second-order pipeline: blur -> resize -> noise -> JPEG.

    Args:
        blur: the stage's blur kernel, or None (stage 2 skips its blur with probability 0.2).
        resize: the stage's resize (see :class:`ResizeParams` for what ``scale`` is relative to).
        noise: the stage's noise, or None.
        jpeg_quality: JPEG quality 1..100, or None for no JPEG. The stage-2 JPEG is the final one and
            is placed by ``DegradationParams.final_order``.
    """

    blur: KernelParams | None = None
    resize: ResizeParams = dataclasses.field(default_factory=ResizeParams)
    noise: NoiseParams | None = None
    jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        if self.jpeg_quality is not None:
            q = int(self.jpeg_quality)
            if q != self.jpeg_quality or not 1 <= q <= 100:
                raise ValueError(f"jpeg_quality must be an integer in 1..100 or None, got {self.jpeg_quality!r}")
            _set(self, "jpeg_quality", q)
        if self.noise is not None and not self.noise.kinds:
            _set(self, "noise", None)


@dataclass(frozen=True)
class DegradationParams:
    """Every sampled value of one Real-ESRGAN second-order degradation operator.

    Args:
        stage1: first stage (its resize is relative to the input size).
        stage2: second stage (its resize is relative to input / ``scale``; its JPEG is the final JPEG).
        final_sinc: the final sinc kernel, or None (Real-ESRGAN: present with probability 0.8).
        final_order: ``resize_first`` = [resize to 1/scale + final sinc] then JPEG;
            ``jpeg_first`` = JPEG then [resize + final sinc].
        final_resize_mode: interpolation of the resize to 1/scale.
        noise_seed: seed of the only random draws made by ``apply`` (the noise), so applying the
            same params twice gives identical bytes.
        scale: the final down-scaling factor (Real-ESRGAN: 4).
        spatial_blur: if set, replaces ``stage1.blur`` by a spatially varying blur (paper §9.8).
    """

    stage1: StageParams = dataclasses.field(default_factory=StageParams)
    stage2: StageParams = dataclasses.field(default_factory=StageParams)
    final_sinc: KernelParams | None = None
    final_order: FinalOrder = "resize_first"
    final_resize_mode: ResizeMode = "bicubic"
    noise_seed: int = 0
    scale: int = 4
    spatial_blur: SpatialBlurParams | None = None

    def __post_init__(self) -> None:
        if self.final_order not in FINAL_ORDERS:
            raise ValueError(f"final_order {self.final_order!r} is not one of {FINAL_ORDERS}")
        if self.final_resize_mode not in RESIZE_MODES:
            raise ValueError(f"final_resize_mode {self.final_resize_mode!r} is not one of {RESIZE_MODES}")
        seed = int(self.noise_seed)
        if seed != self.noise_seed or seed < 0:
            raise ValueError(f"noise_seed must be a non-negative integer, got {self.noise_seed!r}")
        _set(self, "noise_seed", seed)
        scale = int(self.scale)
        if scale != self.scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale!r}")
        _set(self, "scale", scale)
        if self.final_sinc is not None and self.final_sinc.kind != "sinc":
            raise ValueError(f"final_sinc must be a 'sinc' kernel, got kind {self.final_sinc.kind!r}")

    def to_dict(self) -> dict:
        """A plain, JSON-serialisable dict; ``DegradationParams.from_dict`` restores it exactly."""
        return _config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DegradationParams":
        """Rebuild params from :meth:`to_dict` output (e.g. read back from JSON).

        Raises :class:`ConfigError` for unknown keys, wrong types or out-of-range values.
        """
        try:
            return _config_from_dict(cls, data)
        except ValueError as exc:
            raise ConfigError(
                f"invalid degradation parameters: {exc}. Use a dict written by DegradationParams.to_dict()."
            ) from exc


__all__ = [
    "KERNEL_KINDS",
    "RESIZE_MODES",
    "FINAL_ORDERS",
    "KernelParams",
    "ResizeParams",
    "NoiseParams",
    "SpatialBlurParams",
    "StageParams",
    "DegradationParams",
]
