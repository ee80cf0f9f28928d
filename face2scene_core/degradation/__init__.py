"""Degradation synthesis: the Real-ESRGAN second-order model in numpy + OpenCV.

Public API (see ``docs/architecture.md``)::

    from face2scene_core.degradation import RealESRGANDegradation, PRESETS, degrade_image

    deg = RealESRGANDegradation()                 # DegradationConfig() = Real-ESRGAN x4 defaults
    params = deg.sample(np.random.default_rng(7))  # one operator, JSON-serialisable
    lq = deg.apply(img_float, params)              # float32 (H, W, 3) in [0, 1], same size
    lq_u8 = degrade_image(img_u8, PRESETS["D1"])   # uint8 convenience
"""

from .kernels import (
    circular_lowpass_kernel,
    gaussian_kernel,
    generalized_gaussian_kernel,
    make_kernel,
    plateau_kernel,
    random_mixed_kernel,
    random_sinc_kernel,
)
from .ops import add_gaussian_noise, add_poisson_noise, filter2d, jpeg_compress, resize
from .params import (
    DegradationParams,
    KernelParams,
    NoiseParams,
    ResizeParams,
    SpatialBlurParams,
    StageParams,
)
from .pipeline import DegradationConfig, RealESRGANDegradation, apply_degradation, degrade_image
from .presets import PRESETS
from .spatial import spatially_varying_blur

__all__ = [
    "DegradationConfig",
    "DegradationParams",
    "KernelParams",
    "NoiseParams",
    "ResizeParams",
    "SpatialBlurParams",
    "StageParams",
    "RealESRGANDegradation",
    "apply_degradation",
    "degrade_image",
    "PRESETS",
    "spatially_varying_blur",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "plateau_kernel",
    "circular_lowpass_kernel",
    "make_kernel",
    "random_mixed_kernel",
    "random_sinc_kernel",
    "filter2d",
    "resize",
    "add_gaussian_noise",
    "add_poisson_noise",
    "jpeg_compress",
]
