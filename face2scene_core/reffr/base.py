"""The reference-based face restorer (Ref-FR) interface.

A Ref-FR maps an aligned degraded face plus aligned reference faces of the same person to an aligned
restored face. The paper used FaceMe (not usable here); anything that fits this signature plugs in:
a face restored elsewhere (:class:`~face2scene_core.reffr.given.GivenFaceRefFR`), the ground truth
during training ("non-reference" mode), GFPGAN/CodeFormer through spandrel, ...

Subclasses set ``name`` and implement :meth:`RefFR._restore`; :meth:`RefFR.restore` checks the
inputs and the output so every implementation honours the same contract.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Sequence

import cv2
import numpy as np

from ..errors import ReferenceImageError
from ..faces.types import AlignedFace

logger = logging.getLogger(__name__)


def _describe(x) -> str:
    arr = np.asarray(x) if not isinstance(x, np.ndarray) else x
    return f"dtype {arr.dtype}, shape {arr.shape}"


class RefFR(ABC):
    """Base class of reference-based face restorers.

    Class attributes:
        name (str): short identifier shown in logs and UIs.
        size (int, default 512): side of the aligned faces it takes and returns.
        requires_references (bool, default False): whether :meth:`restore` refuses an empty
            reference list (with :class:`ReferenceImageError`).
    """

    name: str = "ref-fr"
    size: int = 512
    requires_references: bool = False

    def check_face(self, face, what: str) -> np.ndarray:
        """``face`` (array or :class:`AlignedFace`) as ``uint8 (size, size, 3)``; ``ValueError`` naming ``what``."""
        if isinstance(face, AlignedFace):
            face = face.image
        if not isinstance(face, np.ndarray):
            raise ValueError(
                f"{what} must be a numpy uint8 ({self.size}, {self.size}, 3) array, got {type(face).__name__}"
            )
        if face.dtype != np.uint8 or face.shape != (self.size, self.size, 3):
            raise ValueError(
                f"{what} must be an aligned face, uint8 ({self.size}, {self.size}, 3) RGB, got {_describe(face)}. "
                "Align it with face2scene_core.faces.align_face(..., size=%d)." % self.size
            )
        return face

    def restore(
        self, lq_face: np.ndarray | AlignedFace, references: Sequence[np.ndarray | AlignedFace] = ()
    ) -> np.ndarray:
        """Restore an aligned face.

        Args:
            lq_face: aligned degraded face, ``uint8 (size, size, 3)`` RGB (or an :class:`AlignedFace`).
            references: aligned reference faces of the same person, each ``uint8 (size, size, 3)``.

        Returns:
            the restored aligned face, ``uint8 (size, size, 3)`` RGB, a new array.
        """
        lq = self.check_face(lq_face, "lq_face")
        if isinstance(references, (np.ndarray, AlignedFace)):
            raise ValueError("references must be a list of aligned faces; wrap a single reference in a list")
        refs = [self.check_face(r, f"references[{i}]") for i, r in enumerate(references)]
        if self.requires_references and not refs:
            raise ReferenceImageError(
                f"The '{self.name}' face restorer needs at least one reference photo of the person; add one."
            )
        out = self._restore(lq, refs)
        return self._check_output(out)

    def _check_output(self, out) -> np.ndarray:
        arr = np.asarray(out)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] != arr.shape[1]:
            raise ValueError(
                f"RefFR '{self.name}' returned {_describe(arr)}; expected uint8 ({self.size}, {self.size}, 3)"
            )
        if arr.shape[0] != self.size:
            interp = cv2.INTER_AREA if arr.shape[0] > self.size else cv2.INTER_CUBIC
            logger.info("RefFR '%s': resized its %dpx output to %dpx", self.name, arr.shape[0], self.size)
            arr = cv2.resize(arr, (self.size, self.size), interpolation=interp)
        return np.array(arr, dtype=np.uint8, copy=True)

    @abstractmethod
    def _restore(self, lq_face: np.ndarray, references: list[np.ndarray]) -> np.ndarray:
        """Restore a checked ``uint8 (size, size, 3)`` face; returns a square ``uint8`` RGB face."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, size={self.size})"
