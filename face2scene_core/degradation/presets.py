"""The four fixed degradation operators D1-D4 of the paper's supplement §7.4.

The paper describes each preset in words only (its numbers were lost); the values below are
our deterministic choices inside Real-ESRGAN's ranges, one per word of the description:

* "strong" resize = the end of the Real-ESRGAN range (stage 1: 0.2 of 0.15..1.5 down, 1.5 up);
  "moderate" = 0.5; stage-2 scales are relative to the final size (input / 4), as in Real-ESRGAN.
* "strong" blur = sigma 3.0 (the top of stage 1's 0.2..3), "milder" = 1.2 (inside stage 2's 0.2..1.5).
* JPEG: "very low" 30 (the bottom of 30..95), "low" 40, "low-mid" 55, "high" 85,
  "very high" 92, "maximum" 95 (the top of the range).
* noise: "light" Gaussian sigma 3, "mild" Poisson scale 0.5, "minimal" Poisson 0.05 and
  "very small" Gaussian 1 (the bottoms of the ranges), "strong" Poisson 2.5 / 2.0.

Severity, measured on Kodak photos (tests/test_degradation.py): D3 is the least degraded (highest PSNR
against the clean image), D1 the blurriest.
"""

from __future__ import annotations

import math

from .params import DegradationParams, KernelParams, NoiseParams, ResizeParams, StageParams

# D1: strong downscale + strong blur + high JPEG quality.
# Stage 1: strong isotropic blur, strong downscale, grey Gaussian + Poisson noise, high-quality JPEG.
# Stage 2: keeps the resolution, milder isotropic blur, very high JPEG; then a final sinc after the JPEG.
D1 = DegradationParams(
    stage1=StageParams(
        blur=KernelParams(kind="iso", size=21, sigma_x=3.0),
        resize=ResizeParams(scale=0.2, mode="area"),
        noise=NoiseParams(gaussian_sigma=8.0, gaussian_gray=True, poisson_scale=1.0, poisson_gray=False),
        jpeg_quality=85,
    ),
    stage2=StageParams(
        blur=KernelParams(kind="iso", size=15, sigma_x=1.2),
        resize=ResizeParams(scale=1.0, mode="bilinear"),
        noise=None,
        jpeg_quality=92,
    ),
    final_sinc=KernelParams(kind="sinc", size=15, omega=math.pi / 3),
    final_order="jpeg_first",
    final_resize_mode="bicubic",
    noise_seed=1001,
    scale=4,
)

# D2: strong upscale + low JPEG, then downscale + anisotropic blur (no final sinc).
# Stage 1: anisotropic blur, strong upscale, strong coloured Poisson noise, low JPEG.
# Stage 2: anisotropic blur, downscale, more Poisson noise, low-mid JPEG at the final size.
D2 = DegradationParams(
    stage1=StageParams(
        blur=KernelParams(kind="aniso", size=21, sigma_x=2.5, sigma_y=0.8, angle=math.pi / 4),
        resize=ResizeParams(scale=1.5, mode="bicubic"),
        noise=NoiseParams(poisson_scale=2.5, poisson_gray=False),
        jpeg_quality=40,
    ),
    stage2=StageParams(
        blur=KernelParams(kind="aniso", size=15, sigma_x=1.4, sigma_y=0.5, angle=-math.pi / 3),
        resize=ResizeParams(scale=0.5, mode="area"),
        noise=NoiseParams(poisson_scale=2.0, poisson_gray=False),
        jpeg_quality=55,
    ),
    final_sinc=None,
    final_order="resize_first",
    final_resize_mode="bilinear",
    noise_seed=1002,
    scale=4,
)

# D3: almost clean, with sinc filtering. Both stages keep the resolution and use the maximum
# JPEG quality. Stage 1: a mild sinc, minimal Poisson noise; stage 2: a very small Gaussian noise,
# then the final sinc ("another sinc filter") before the last JPEG.
D3 = DegradationParams(
    stage1=StageParams(
        blur=KernelParams(kind="sinc", size=13, omega=0.9 * math.pi),
        resize=ResizeParams(scale=1.0, mode="bicubic"),
        noise=NoiseParams(poisson_scale=0.05, poisson_gray=False),
        jpeg_quality=95,
    ),
    stage2=StageParams(
        blur=None,
        resize=ResizeParams(scale=1.0, mode="bicubic"),
        noise=NoiseParams(gaussian_sigma=1.0, gaussian_gray=True),
        jpeg_quality=95,
    ),
    final_sinc=KernelParams(kind="sinc", size=13, omega=0.9 * math.pi),
    final_order="resize_first",
    final_resize_mode="bicubic",
    noise_seed=1003,
    scale=4,
)

# D4: moderate downscale + light noise + very low JPEG, then upscale + plateau blur.
# Stage 1: plateau-anisotropic blur, moderate downscale, light coloured Gaussian + mild Poisson
# noise, very low JPEG. Stage 2: plateau-anisotropic blur, an "up" resize (relative to the final
# size, hence the slight scale inconsistency), very low JPEG, then the final sinc.
D4 = DegradationParams(
    stage1=StageParams(
        blur=KernelParams(kind="plateau_aniso", size=15, sigma_x=2.0, sigma_y=1.0, angle=math.pi / 6, beta=1.5),
        resize=ResizeParams(scale=0.5, mode="bilinear"),
        noise=NoiseParams(gaussian_sigma=3.0, gaussian_gray=False, poisson_scale=0.5, poisson_gray=False),
        jpeg_quality=30,
    ),
    stage2=StageParams(
        blur=KernelParams(kind="plateau_aniso", size=11, sigma_x=1.2, sigma_y=0.6, angle=-math.pi / 4, beta=1.2),
        resize=ResizeParams(scale=1.2, mode="bicubic"),
        noise=None,
        jpeg_quality=30,
    ),
    final_sinc=KernelParams(kind="sinc", size=15, omega=0.6 * math.pi),
    final_order="jpeg_first",
    final_resize_mode="area",
    noise_seed=1004,
    scale=4,
)

#: ``{"D1": ..., "D4": ...}``; the params are frozen dataclasses, so a preset cannot be altered in place.
PRESETS: dict[str, DegradationParams] = {"D1": D1, "D2": D2, "D3": D3, "D4": D4}

__all__ = ["PRESETS", "D1", "D2", "D3", "D4"]
