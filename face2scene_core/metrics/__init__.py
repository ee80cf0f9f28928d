"""Image-quality metrics used by the evaluation scripts (PSNR, SSIM, face-excluded scene metrics)."""

from .quality import face_excluded, mean_ci, psnr, rgb_to_y, ssim

__all__ = ["face_excluded", "mean_ci", "psnr", "rgb_to_y", "ssim"]
