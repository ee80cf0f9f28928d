"""Real-ESRGAN second-order degradation: sample an operator, apply it to any image.

    deg = RealESRGANDegradation()                  # Real-ESRGAN x4 defaults
    params = deg.sample(np.random.default_rng(0))  # DegradationParams (JSON-serialisable)
    lq = deg.apply(scene, params)                  # float32 (H, W, 3), same size as ``scene``
    lq_face = deg.apply(face_crop, params)         # the same operator on the face crop

The pipeline (Wang et al., Real-ESRGAN, 2021):

1. stage 1: blur (Gaussian family or sinc; optionally spatially varying) -> resize relative to the
   input -> Gaussian or Poisson noise -> JPEG;
2. stage 2: blur (with probability 0.8) -> resize relative to the final size (input / scale) ->
   noise;
3. in random order: [resize to input / scale + final sinc] and the final JPEG;
4. clip and round to 1/255 steps. With ``keep_size`` (default) the result is then resized back to
   the input size with bicubic, so LQ and GT are pixel aligned (how the restorer is trained/used).

``apply`` is a pure function of (image, params): its only random draws (the noise) come from
``np.random.default_rng([params.noise_seed, stage])``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..imageio import to_float, to_uint8
from .kernels import make_kernel, odd_sizes, random_kernel_size, random_mixed_kernel, random_sinc_kernel
from .ops import (
    add_noise,
    check_float_image,
    filter2d,
    jpeg_compress,
    random_jpeg_quality,
    random_noise,
    random_resize,
    resize,
)
from .params import (
    KERNEL_KINDS,
    RESIZE_MODES,
    DegradationParams,
    KernelParams,
    NoiseParams,
    ResizeParams,
    SpatialBlurParams,
    StageParams,
)
from .spatial import spatially_varying_blur

logger = logging.getLogger(__name__)

DEFAULT_KERNEL_LIST = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
DEFAULT_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)


@dataclass
class DegradationConfig:
    """Ranges and probabilities of the random operator. Defaults: Real-ESRGAN x4
    (``options/train_realesrgan_x4plus.yml`` and ``realesrgan_dataset.py``). Keys without a ``2``
    are stage 1, keys ending in ``2`` are stage 2. Load from YAML with
    ``face2scene_core.config.load_config(DegradationConfig, path)``.

    Args:
        scale (int, 4): final down-scaling factor.
        kernel_range (tuple[int, int], (7, 21)): inclusive range of odd kernel sizes.
        rotation_range (tuple[float, float], (-pi, pi)): angle range of anisotropic kernels.
        kernel_list / kernel_list2 (tuple[str, ...]): kernel kinds to draw from (Gaussian family).
        kernel_prob / kernel_prob2 (tuple[float, ...], (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)): their weights.
        sinc_prob / sinc_prob2 (float, 0.1): probability of a sinc kernel instead.
        blur_sigma (tuple, (0.2, 3)) / blur_sigma2 (tuple, (0.2, 1.5)): Gaussian sigma ranges, pixels.
        betag_range / betag_range2 (tuple, (0.5, 4)): generalized Gaussian shape range.
        betap_range / betap_range2 (tuple, (1, 2)): plateau shape range.
        resize_prob (tuple, (0.2, 0.7, 0.1)) / resize_prob2 ((0.3, 0.4, 0.3)): weights of up/down/keep.
        resize_range (tuple, (0.15, 1.5)) / resize_range2 ((0.3, 1.2)): scale ranges.
        gaussian_noise_prob / gaussian_noise_prob2 (float, 0.5): Gaussian (else Poisson) noise.
        noise_range (tuple, (1, 30)) / noise_range2 ((1, 25)): Gaussian sigma, 0..255 units.
        poisson_scale_range (tuple, (0.05, 3)) / poisson_scale_range2 ((0.05, 2.5)): Poisson scale.
        gray_noise_prob / gray_noise_prob2 (float, 0.4): grey (channel-shared) noise.
        jpeg_range / jpeg_range2 (tuple, (30, 95)): JPEG quality ranges.
        second_blur_prob (float, 0.8): stage 2 blurs at all.
        final_sinc_prob (float, 0.8): a final sinc filter is applied.
        final_resize_first_prob (float, 0.5): [resize + sinc] comes before the final JPEG.
        resize_modes (tuple[str, ...], ("area", "bilinear", "bicubic")): drawn uniformly.
        sinc_omega_small (tuple, (pi/3, pi)): sinc cut-off for kernels smaller than ``sinc_large_from``.
        sinc_omega_large (tuple, (pi/5, pi)): sinc cut-off for larger kernels.
        sinc_large_from (int, 13): kernel size from which ``sinc_omega_large`` applies.
        final_sinc_omega (tuple, (pi/3, pi)): cut-off range of the final sinc.
        spatial_blur_prob (float, 0.0): stage-1 blur is spatially varying (paper §9.8); 1.0 always.
        spatial_sigma_center (tuple, (0.2, 1.0)) / spatial_sigma_corner (tuple, (1.5, 3.0)): its sigmas.
        spatial_kernel_size (int, 21), spatial_levels (int, 6), spatial_power (float, 2.0): its shape.
    """

    scale: int = 4
    kernel_range: tuple[int, int] = (7, 21)
    rotation_range: tuple[float, float] = (-math.pi, math.pi)
    # ---- the first degradation
    kernel_list: tuple[str, ...] = DEFAULT_KERNEL_LIST
    kernel_prob: tuple[float, ...] = DEFAULT_KERNEL_PROB
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # ---- the second degradation
    second_blur_prob: float = 0.8
    kernel_list2: tuple[str, ...] = DEFAULT_KERNEL_LIST
    kernel_prob2: tuple[float, ...] = DEFAULT_KERNEL_PROB
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    # ---- the final step
    final_sinc_prob: float = 0.8
    final_resize_first_prob: float = 0.5
    resize_modes: tuple[str, ...] = RESIZE_MODES
    sinc_omega_small: tuple[float, float] = (math.pi / 3, math.pi)
    sinc_omega_large: tuple[float, float] = (math.pi / 5, math.pi)
    sinc_large_from: int = 13
    final_sinc_omega: tuple[float, float] = (math.pi / 3, math.pi)
    # ---- spatially varying first blur (paper §9.8)
    spatial_blur_prob: float = 0.0
    spatial_sigma_center: tuple[float, float] = (0.2, 1.0)
    spatial_sigma_corner: tuple[float, float] = (1.5, 3.0)
    spatial_kernel_size: int = 21
    spatial_levels: int = 6
    spatial_power: float = 2.0

    def __post_init__(self) -> None:
        def fail(key: str, why: str) -> None:
            raise ConfigError(f"degradation config '{key}' = {getattr(self, key)!r}: {why}")

        if int(self.scale) != self.scale or self.scale < 1:
            fail("scale", "must be a positive integer")
        try:
            odd_sizes(self.kernel_range)
        except ValueError:
            fail("kernel_range", "must contain an odd kernel size >= 1, e.g. (7, 21)")
        for key in ("sinc_prob", "sinc_prob2", "gaussian_noise_prob", "gaussian_noise_prob2", "gray_noise_prob",
                    "gray_noise_prob2", "second_blur_prob", "final_sinc_prob", "final_resize_first_prob",
                    "spatial_blur_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                fail(key, "a probability must be in [0, 1]")
        for lst, prob in (("kernel_list", "kernel_prob"), ("kernel_list2", "kernel_prob2")):
            kinds, weights = getattr(self, lst), getattr(self, prob)
            bad = [k for k in kinds if k not in KERNEL_KINDS or k == "sinc"]
            if bad or not kinds:
                fail(lst, f"kinds must be among {KERNEL_KINDS[:-1]} (sinc has its own probability)")
            if len(weights) != len(kinds) or min(weights) < 0 or sum(weights) <= 0:
                fail(prob, f"needs {len(kinds)} non-negative weights, one per entry of {lst}")
        for key in ("resize_prob", "resize_prob2"):
            if min(getattr(self, key)) < 0 or sum(getattr(self, key)) <= 0:
                fail(key, "needs three non-negative weights (up, down, keep)")
        for key in ("resize_range", "resize_range2"):
            lo, hi = getattr(self, key)
            if not 0 < lo <= 1 <= hi:
                fail(key, "must satisfy 0 < low <= 1 <= high")
        for key in ("blur_sigma", "blur_sigma2", "betag_range", "betag_range2", "betap_range", "betap_range2",
                    "poisson_scale_range", "poisson_scale_range2", "noise_range", "noise_range2",
                    "spatial_sigma_center", "spatial_sigma_corner", "rotation_range"):
            lo, hi = getattr(self, key)
            if lo > hi or (key != "rotation_range" and lo < 0):
                fail(key, "must be an ordered (low, high) pair of non-negative numbers")
        for key in ("blur_sigma", "blur_sigma2", "betag_range", "betag_range2", "betap_range", "betap_range2"):
            if getattr(self, key)[0] <= 0:
                fail(key, "the lower bound must be > 0")
        for key in ("jpeg_range", "jpeg_range2"):
            lo, hi = getattr(self, key)
            if not 1 <= lo <= hi <= 100:
                fail(key, "must satisfy 1 <= low <= high <= 100")
        for key in ("sinc_omega_small", "sinc_omega_large", "final_sinc_omega"):
            lo, hi = getattr(self, key)
            if not 0 < lo <= hi <= math.pi + 1e-9:
                fail(key, "a sinc cut-off range must satisfy 0 < low <= high <= pi")
        if not self.resize_modes or any(m not in RESIZE_MODES for m in self.resize_modes):
            fail("resize_modes", f"entries must be among {RESIZE_MODES}")
        if self.spatial_kernel_size < 1 or self.spatial_kernel_size % 2 == 0:
            fail("spatial_kernel_size", "must be an odd positive integer")
        if self.spatial_levels < 2:
            fail("spatial_levels", "must be >= 2")
        if self.spatial_power <= 0:
            fail("spatial_power", "must be > 0")


def _stage_value(cfg: DegradationConfig, name: str, stage: int):
    """Config value of ``name`` for a stage: ``name`` for stage 1, ``name2`` for stage 2."""
    return getattr(cfg, name if stage == 1 else f"{name}2")


class RealESRGANDegradation:
    """Samples and applies Real-ESRGAN second-order degradation operators.

    Args:
        config (DegradationConfig | None, None): ranges and probabilities; None = Real-ESRGAN x4 defaults.
    """

    def __init__(self, config: DegradationConfig | None = None):
        if config is not None and not isinstance(config, DegradationConfig):
            raise ValueError(f"config must be a DegradationConfig or None, got {type(config).__name__}")
        self.config = config if config is not None else DegradationConfig()

    # ------------------------------------------------------------------ sampling

    def _sample_kernel(self, rng: np.random.Generator, stage: int) -> KernelParams:
        cfg = self.config
        size = random_kernel_size(rng, cfg.kernel_range)
        if rng.uniform() < _stage_value(cfg, "sinc_prob", stage):
            omega_range = cfg.sinc_omega_small if size < cfg.sinc_large_from else cfg.sinc_omega_large
            return random_sinc_kernel(rng, size=size, omega_range=omega_range)
        return random_mixed_kernel(
            rng,
            size=size,
            kernel_list=_stage_value(cfg, "kernel_list", stage),
            kernel_prob=_stage_value(cfg, "kernel_prob", stage),
            sigma_range=_stage_value(cfg, "blur_sigma", stage),
            rotation_range=cfg.rotation_range,
            betag_range=_stage_value(cfg, "betag_range", stage),
            betap_range=_stage_value(cfg, "betap_range", stage),
        )

    def _sample_stage(self, rng: np.random.Generator, stage: int) -> StageParams:
        cfg = self.config
        blur = None
        if stage == 1 or rng.uniform() < cfg.second_blur_prob:
            blur = self._sample_kernel(rng, stage)
        resize_params = random_resize(
            rng,
            resize_prob=_stage_value(cfg, "resize_prob", stage),
            resize_range=_stage_value(cfg, "resize_range", stage),
            modes=cfg.resize_modes,
        )
        noise = random_noise(
            rng,
            gaussian_prob=_stage_value(cfg, "gaussian_noise_prob", stage),
            sigma_range=_stage_value(cfg, "noise_range", stage),
            poisson_scale_range=_stage_value(cfg, "poisson_scale_range", stage),
            gray_prob=_stage_value(cfg, "gray_noise_prob", stage),
        )
        quality = random_jpeg_quality(rng, _stage_value(cfg, "jpeg_range", stage))
        return StageParams(blur=blur, resize=resize_params, noise=noise, jpeg_quality=quality)

    def sample(self, rng: np.random.Generator) -> DegradationParams:
        """Draw one operator. Uses only ``rng`` (a ``numpy.random.Generator``), so the same seed
        gives the same :class:`DegradationParams`."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(
                f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
            )
        cfg = self.config
        stage1 = self._sample_stage(rng, 1)
        stage2 = self._sample_stage(rng, 2)
        final_sinc = None
        if rng.uniform() < cfg.final_sinc_prob:
            size = random_kernel_size(rng, cfg.kernel_range)
            final_sinc = random_sinc_kernel(rng, size=size, omega_range=cfg.final_sinc_omega)
        final_order = "resize_first" if rng.uniform() < cfg.final_resize_first_prob else "jpeg_first"
        final_mode = str(cfg.resize_modes[int(rng.integers(len(cfg.resize_modes)))])
        spatial = None
        if rng.uniform() < cfg.spatial_blur_prob:
            spatial = SpatialBlurParams(
                sigma_center=float(rng.uniform(*cfg.spatial_sigma_center)),
                sigma_corner=float(rng.uniform(*cfg.spatial_sigma_corner)),
                kernel_size=cfg.spatial_kernel_size,
                levels=cfg.spatial_levels,
                power=cfg.spatial_power,
            )
            stage1 = StageParams(blur=None, resize=stage1.resize, noise=stage1.noise, jpeg_quality=stage1.jpeg_quality)
        noise_seed = int(rng.integers(0, 2**31 - 1))
        params = DegradationParams(
            stage1=stage1,
            stage2=stage2,
            final_sinc=final_sinc,
            final_order=final_order,
            final_resize_mode=final_mode,
            noise_seed=noise_seed,
            scale=int(cfg.scale),
            spatial_blur=spatial,
        )
        logger.debug("sampled degradation operator %s", params)
        return params

    # ------------------------------------------------------------------ applying

    def apply(
        self,
        image: np.ndarray,
        params: DegradationParams,
        *,
        keep_size: bool = True,
        region: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        """Degrade ``image`` with ``params``; see :func:`apply_degradation`."""
        return apply_degradation(image, params, keep_size=keep_size, region=region)


def _resize_to(x: np.ndarray, current: float, target: float, ref_hw: tuple[int, int], mode: str) -> np.ndarray:
    """Resize from nominal scale ``current`` to ``target`` (both relative to the input ``ref_hw``)."""
    size = (max(1, round(ref_hw[0] * target)), max(1, round(ref_hw[1] * target)))
    return resize(x, target / current, mode, size=size)


def apply_degradation(
    image: np.ndarray,
    params: DegradationParams,
    *,
    keep_size: bool = True,
    region: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Apply one operator to a float image.

    Args:
        image: float32 (H, W, 3) in [0, 1] (any float dtype is accepted and converted).
        params: the operator (sampled, a preset, or read back with ``DegradationParams.from_dict``).
        keep_size: True: return (H, W, 3), the LR result resized back with bicubic; False: return the
            LR result, ``(max(1, round(H / scale)), max(1, round(W / scale)), 3)``.
        region: only for a spatially varying blur: ``(x0, y0, frame_width, frame_height)`` when
            ``image`` is a crop of a larger frame, so the crop gets the blur of its position.
    Returns float32 in [0, 1] on 1/255 steps. Same (image, params) -> identical bytes.
    """
    if not isinstance(params, DegradationParams):
        raise ValueError(f"params must be a DegradationParams, got {type(params).__name__}")
    x = check_float_image(image)
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3 or not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"image values must be in [0, 1], got min {lo:.4g}, max {hi:.4g}")
    x = np.clip(x, 0.0, 1.0)
    ref_hw = x.shape[:2]
    s1, s2 = params.stage1, params.stage2

    # ---- stage 1 (resize relative to the input)
    if params.spatial_blur is not None:
        sb = params.spatial_blur
        x = spatially_varying_blur(
            x, sigma_center=sb.sigma_center, sigma_corner=sb.sigma_corner, kernel_size=sb.kernel_size,
            levels=sb.levels, power=sb.power, region=region,
        )
    elif s1.blur is not None:
        x = filter2d(x, make_kernel(s1.blur))
    current = s1.resize.scale
    x = _resize_to(x, 1.0, current, ref_hw, s1.resize.mode)
    x = add_noise(x, s1.noise, np.random.default_rng([params.noise_seed, 1]))
    if s1.jpeg_quality is not None:
        x = jpeg_compress(x, s1.jpeg_quality)

    # ---- stage 2 (resize relative to the final LR size)
    if s2.blur is not None:
        x = filter2d(x, make_kernel(s2.blur))
    target = s2.resize.scale / params.scale
    x = _resize_to(x, current, target, ref_hw, s2.resize.mode)
    current = target
    x = add_noise(x, s2.noise, np.random.default_rng([params.noise_seed, 2]))

    # ---- final: [resize to 1/scale + sinc] and the last JPEG, in the sampled order
    def resize_and_sinc(y: np.ndarray) -> np.ndarray:
        y = _resize_to(y, current, 1.0 / params.scale, ref_hw, params.final_resize_mode)
        return y if params.final_sinc is None else filter2d(y, make_kernel(params.final_sinc))

    def final_jpeg(y: np.ndarray) -> np.ndarray:
        return y if s2.jpeg_quality is None else jpeg_compress(y, s2.jpeg_quality)

    if params.final_order == "resize_first":
        x = final_jpeg(resize_and_sinc(x))
    else:
        x = resize_and_sinc(final_jpeg(x))
    x = np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0

    if keep_size:
        x = resize(x, float(params.scale), "bicubic", size=ref_hw)
        x = np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0
    return np.ascontiguousarray(x, dtype=np.float32)


def degrade_image(image: np.ndarray, params: DegradationParams, keep_size: bool = True) -> np.ndarray:
    """Degrade an RGB ``uint8 (H, W, 3)`` image; returns ``uint8`` ((H, W, 3) with ``keep_size``)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"degrade_image expects a uint8 (H, W, 3) RGB image, got {arr.dtype} {arr.shape}")
    return to_uint8(apply_degradation(to_float(arr), params, keep_size=keep_size))


__all__ = [
    "DegradationConfig",
    "DegradationParams",
    "KernelParams",
    "ResizeParams",
    "NoiseParams",
    "StageParams",
    "SpatialBlurParams",
    "RealESRGANDegradation",
    "apply_degradation",
    "degrade_image",
]
