"""A Ref-FR that returns a face it was given: the ground truth, or a face restored by another tool."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from ..faces.types import AlignedFace
from ..imageio import to_uint8
from .base import RefFR

logger = logging.getLogger(__name__)


class GivenFaceRefFR(RefFR):
    """Returns ``hq_face`` whatever the input: the paper's "non-reference" mode (training and
    evaluation with the ground-truth face) and the way to plug in any external face restorer.

    Args:
        hq_face (np.ndarray | AlignedFace): the aligned HQ face, ``uint8 (H, W, 3)`` RGB or
            ``float (H, W, 3)`` in ``[0, 1]`` (grey ``(H, W)`` is expanded). A face that is not
            ``size x size`` is resized to it (area filter when shrinking, cubic when enlarging) and
            a log line says so.
        size (int, default 512): aligned face size.
    """

    name = "given"

    def __init__(self, hq_face: np.ndarray | AlignedFace, *, size: int = 512) -> None:
        if size < 16:
            raise ValueError(f"size must be >= 16, got {size}")
        self.size = int(size)
        if isinstance(hq_face, AlignedFace):
            hq_face = hq_face.image
        arr = np.asarray(hq_face)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"hq_face must be an (H, W, 3) RGB image, got shape {arr.shape}")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
                raise ValueError("hq_face as float must lie in [0, 1]")
            arr = to_uint8(arr)
        elif arr.dtype != np.uint8:
            raise ValueError(f"hq_face must be uint8 or float in [0, 1], got dtype {arr.dtype}")
        h, w = arr.shape[:2]
        if (h, w) != (self.size, self.size):
            if h != w:
                logger.warning("GivenFaceRefFR: the given face is %dx%d, not square; its aspect ratio changes", w, h)
            interp = cv2.INTER_AREA if max(h, w) > self.size else cv2.INTER_CUBIC
            arr = cv2.resize(arr, (self.size, self.size), interpolation=interp)
            logger.info("GivenFaceRefFR: resized the given HQ face from %dx%d to %dx%d", w, h, self.size, self.size)
        self.hq_face = np.ascontiguousarray(arr)

    def _restore(self, lq_face: np.ndarray, references: list[np.ndarray]) -> np.ndarray:
        return self.hq_face.copy()
