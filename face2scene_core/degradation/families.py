"""What people's photos suffer, at native scale: degradation *families*, mild to heavy, and a fixed benchmark grid.

The Real-ESRGAN x4 second-order model (:mod:`.pipeline`) is one heavy corner of what a photographer meets. A
phone or scanner photo is far more often clean, a little compressed, a little noisy, slightly soft or shaken,
or down-scaled once and blown up again. This module describes each of these as a plain
:class:`~.params.DegradationParams` (so every operator is JSON-serialisable, seeded and applied by the same
:func:`~.pipeline.apply_degradation`, always back at the photo's own size):

=============  ==========================================================================================
family         operator
=============  ==========================================================================================
``clean``      nothing (the output must equal the input)
``jpeg``       one JPEG at quality q
``noise``      sensor noise: Gaussian or Poisson (shot) noise, colour or grey, optionally then a JPEG
``blur``       Gaussian (defocus) blur, optionally light noise, optionally a JPEG
``motion``     linear motion blur (camera shake), optionally a JPEG
``downup``     x2 or x4 down-scale, noise at the small size, a JPEG, then bicubic back up (a small photo viewed
               large)
``preset``     the paper's D1-D4 (:mod:`.presets`)
``realesrgan`` a random Real-ESRGAN x4 second-order operator
=============  ==========================================================================================

:class:`PhotoDegradation` samples a family mixture for training (``sample(rng)`` / ``apply(img, params)``, the
interface every trainer takes). :func:`benchmark_grid` is the fixed, seeded grid the photo benchmark reports on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .params import DegradationParams, KernelParams, NoiseParams, ResizeParams, StageParams
from .pipeline import DegradationConfig, RealESRGANDegradation, apply_degradation
from .presets import PRESETS

FAMILIES: tuple[str, ...] = ("clean", "jpeg", "noise", "blur", "motion", "downup", "preset", "realesrgan")

#: training mixture (``preset`` is left out: D1-D4 stay unseen operators for the evaluation)
DEFAULT_FAMILY_WEIGHTS: dict[str, float] = {
    "clean": 0.12, "jpeg": 0.12, "noise": 0.16, "blur": 0.12, "motion": 0.10, "downup": 0.18, "preset": 0.0,
    "realesrgan": 0.20,
}


def _odd(n: float) -> int:
    k = int(math.ceil(n))
    return k if k % 2 == 1 else k + 1


def gaussian_blur(sigma: float, sigma_y: float | None = None, angle: float = 0.0) -> KernelParams:
    """An (an)isotropic Gaussian kernel of ``sigma`` pixels, sized to +-3 sigma (at most 25 px)."""
    size = min(_odd(6.0 * max(sigma, sigma_y or 0.0) + 1.0), 25)
    if sigma_y is None or sigma_y == sigma:
        return KernelParams(kind="iso", size=max(size, 3), sigma_x=sigma)
    return KernelParams(kind="aniso", size=max(size, 3), sigma_x=sigma, sigma_y=sigma_y, angle=angle)


def motion_blur(length: float, angle: float) -> KernelParams:
    """A linear motion kernel of ``length`` pixels at ``angle`` radians."""
    return KernelParams(kind="motion", size=_odd(length + 1.0), sigma_x=length, angle=angle)


def photo_op(
    *,
    blur: KernelParams | None = None,
    scale: int = 1,
    down_mode: str = "area",
    noise: NoiseParams | None = None,
    jpeg: int | None = None,
    noise_seed: int = 0,
) -> DegradationParams:
    """One native-scale operator: blur -> [down-scale by ``scale``] -> noise -> JPEG -> [bicubic back up].

    Expressed as a :class:`DegradationParams` (stage 1: blur, resize to ``1/scale``, noise; stage 2 holds the
    JPEG, which is the final one); ``apply_degradation(..., keep_size=True)`` returns the photo's own size.
    """
    if scale not in (1, 2, 3, 4):
        raise ValueError(f"scale must be 1, 2, 3 or 4, got {scale!r}")
    return DegradationParams(
        stage1=StageParams(blur=blur, resize=ResizeParams(scale=1.0 / scale, mode=down_mode), noise=noise),
        stage2=StageParams(resize=ResizeParams(scale=1.0, mode="bicubic"), jpeg_quality=jpeg),
        final_sinc=None, final_order="resize_first", final_resize_mode="bicubic", noise_seed=int(noise_seed),
        scale=int(scale),
    )


def _noise(rng: np.random.Generator, *, sigma: tuple[float, float], poisson: tuple[float, float],
           gaussian_prob: float = 0.6, gray_prob: float = 0.3) -> NoiseParams:
    gray = bool(rng.random() < gray_prob)
    if rng.random() < gaussian_prob:
        return NoiseParams(gaussian_sigma=float(rng.uniform(*sigma)), gaussian_gray=gray)
    return NoiseParams(poisson_scale=float(rng.uniform(*poisson)), poisson_gray=gray)


def _maybe_jpeg(rng: np.random.Generator, prob: float, lo: float, hi: float) -> int | None:
    return int(round(rng.uniform(lo, hi))) if rng.random() < prob else None


@dataclass
class PhotoDegradationConfig:
    """The training mixture of :class:`PhotoDegradation`.

    Args:
        family_weights: relative weight of each family (keys from :data:`FAMILIES`; missing = 0).
        realesrgan: overrides of :class:`~.pipeline.DegradationConfig` for the ``realesrgan`` family.
    """

    family_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FAMILY_WEIGHTS))
    realesrgan: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.family_weights) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown degradation families {sorted(unknown)}; choose from {FAMILIES}")
        if any(float(w) < 0 for w in self.family_weights.values()) or sum(self.family_weights.values()) <= 0:
            raise ValueError(f"family_weights must be >= 0 and not all 0, got {self.family_weights}")


class PhotoDegradation:
    """Samples native-scale operators from a mixture of :data:`FAMILIES`, mild to heavy.

    ``sample(rng)`` returns a :class:`DegradationParams`; ``sample_family(rng)`` also names its family;
    ``apply(image, params)`` = :func:`apply_degradation` (same size). A ``clean`` draw is always the same
    params (``noise_seed`` 0), so two clean draws compare equal.
    """

    def __init__(self, config: PhotoDegradationConfig | None = None):
        from ..config import from_dict

        self.config = config or PhotoDegradationConfig()
        names = [f for f in FAMILIES if self.config.family_weights.get(f, 0) > 0]
        w = np.asarray([float(self.config.family_weights[f]) for f in names])
        self.families, self.weights = names, w / w.sum()
        self.realesrgan = RealESRGANDegradation(from_dict(DegradationConfig, dict(self.config.realesrgan),
                                                          prefix="realesrgan."))

    def sample_family(self, rng: np.random.Generator) -> tuple[str, DegradationParams]:
        family = self.families[int(rng.choice(len(self.families), p=self.weights))]
        return family, self.sample_from(family, rng)

    def sample(self, rng: np.random.Generator) -> DegradationParams:
        return self.sample_family(rng)[1]

    def sample_from(self, family: str, rng: np.random.Generator) -> DegradationParams:
        """One random operator of ``family``."""
        seed = int(rng.integers(2**31 - 1))
        if family == "clean":
            return photo_op()
        if family == "jpeg":
            return photo_op(jpeg=int(round(rng.uniform(20, 92))), noise_seed=seed)
        if family == "noise":
            noise = _noise(rng, sigma=(1.5, 25.0), poisson=(0.2, 3.0))
            return photo_op(noise=noise, jpeg=_maybe_jpeg(rng, 0.5, 50, 95), noise_seed=seed)
        if family == "blur":
            sigma = float(rng.uniform(0.5, 3.0))
            if rng.random() < 0.3:
                kernel = gaussian_blur(sigma, sigma * float(rng.uniform(0.5, 1.0)), float(rng.uniform(0, math.pi)))
            else:
                kernel = gaussian_blur(sigma)
            noise = _noise(rng, sigma=(1.0, 5.0), poisson=(0.1, 0.5)) if rng.random() < 0.3 else None
            return photo_op(blur=kernel, noise=noise, jpeg=_maybe_jpeg(rng, 0.6, 30, 95), noise_seed=seed)
        if family == "motion":
            kernel = motion_blur(float(rng.uniform(3.0, 13.0)), float(rng.uniform(0, math.pi)))
            return photo_op(blur=kernel, jpeg=_maybe_jpeg(rng, 0.6, 30, 95), noise_seed=seed)
        if family == "downup":
            scale = 2 if rng.random() < 0.6 else 4
            blur = gaussian_blur(float(rng.uniform(0.4, 1.2))) if rng.random() < 0.3 else None
            noise = _noise(rng, sigma=(1.0, 10.0), poisson=(0.1, 1.5)) if rng.random() < 0.6 else None
            mode = ("area", "bilinear", "bicubic")[int(rng.integers(3))]
            return photo_op(blur=blur, scale=scale, down_mode=mode, noise=noise,
                            jpeg=_maybe_jpeg(rng, 0.8, 30, 95), noise_seed=seed)
        if family == "preset":
            return PRESETS[("D1", "D2", "D3", "D4")[int(rng.integers(4))]]
        if family == "realesrgan":
            return self.realesrgan.sample(rng)
        raise ValueError(f"unknown degradation family {family!r}; choose from {FAMILIES}")

    def apply(self, image: np.ndarray, params: DegradationParams, **kwargs) -> np.ndarray:
        return apply_degradation(image, params, **kwargs)

    @staticmethod
    def is_identity(params: DegradationParams) -> bool:
        """True for the ``clean`` operator (whatever its noise seed): applying it returns the input."""
        return params.scale == 1 and params == photo_op(noise_seed=params.noise_seed)


def build_degradation(operators: str, overrides: dict | None = None):
    """A training operator sampler by name: ``"realesrgan"`` (``overrides`` of :class:`~.pipeline.DegradationConfig`)
    or ``"photo"`` (of :class:`PhotoDegradationConfig`); a bad name or value raises ``ConfigError``."""
    from ..config import from_dict
    from ..errors import ConfigError

    kinds = {"realesrgan": (DegradationConfig, RealESRGANDegradation),
             "photo": (PhotoDegradationConfig, PhotoDegradation)}
    if operators not in kinds:
        raise ConfigError(f"operators must be one of {sorted(kinds)}, got {operators!r}")
    config_cls, sampler_cls = kinds[operators]
    try:
        return sampler_cls(from_dict(config_cls, dict(overrides or {}), prefix="degradation."))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid degradation settings {overrides}: {exc}") from exc


@dataclass(frozen=True)
class GridOperator:
    """One operator of the benchmark grid: a short ``name``, its ``family`` and the ``params``."""

    name: str
    family: str
    params: DegradationParams


def benchmark_grid(seed: int = 2026) -> list[GridOperator]:
    """The fixed operator grid of the photo benchmark (19 operators, 8 families), the same for every run.

    Two ``realesrgan`` operators are drawn from Real-ESRGAN's x4 defaults with ``seed``.
    """
    g = gaussian_blur
    ops = [
        GridOperator("clean", "clean", photo_op()),
        GridOperator("jpeg_q30", "jpeg", photo_op(jpeg=30)),
        GridOperator("jpeg_q60", "jpeg", photo_op(jpeg=60)),
        GridOperator("gauss_colour_s15", "noise", photo_op(noise=NoiseParams(gaussian_sigma=15.0), noise_seed=11)),
        GridOperator("gauss_grey_s10", "noise",
                     photo_op(noise=NoiseParams(gaussian_sigma=10.0, gaussian_gray=True), noise_seed=12)),
        GridOperator("poisson_colour_2", "noise", photo_op(noise=NoiseParams(poisson_scale=2.0), noise_seed=13)),
        GridOperator("gauss_s15_jpeg60", "noise", photo_op(noise=NoiseParams(gaussian_sigma=15.0), jpeg=60,
                                                           noise_seed=14)),
        GridOperator("blur_s1", "blur", photo_op(blur=g(1.0))),
        GridOperator("blur_s2_jpeg40", "blur", photo_op(blur=g(2.0), jpeg=40)),
        GridOperator("motion_5", "motion", photo_op(blur=motion_blur(5.0, 0.0))),
        GridOperator("motion_9_jpeg30", "motion", photo_op(blur=motion_blur(9.0, 0.0), jpeg=30)),
        GridOperator("x2_noise5_jpeg50", "downup", photo_op(scale=2, down_mode="bicubic",
                                                            noise=NoiseParams(gaussian_sigma=5.0), jpeg=50, noise_seed=15)),
        GridOperator("x4_noise3_jpeg70", "downup", photo_op(scale=4, down_mode="area",
                                                            noise=NoiseParams(gaussian_sigma=3.0), jpeg=70, noise_seed=16)),
    ]
    ops += [GridOperator(name, "preset", params) for name, params in sorted(PRESETS.items())]
    rng = np.random.default_rng(seed)
    sampler = RealESRGANDegradation()
    ops += [GridOperator(f"resr_{k}", "realesrgan", sampler.sample(rng)) for k in ("a", "b")]
    return ops


__all__ = [
    "FAMILIES",
    "DEFAULT_FAMILY_WEIGHTS",
    "PhotoDegradationConfig",
    "PhotoDegradation",
    "GridOperator",
    "benchmark_grid",
    "build_degradation",
    "photo_op",
    "gaussian_blur",
    "motion_blur",
]
