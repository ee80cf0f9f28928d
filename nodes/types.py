"""The objects that flow between Face2Scene nodes (besides ComfyUI's IMAGE / MASK / STRING / INT).

``FACE2SCENE_MODEL`` is :class:`~.model.Face2SceneModel`. The others are plain data, one entry per image
of the IMAGE batch they were computed from (an entry is empty when that image had no usable face and the
user chose to restore it without degradation tokens). Their ``repr`` is short: ComfyUI prints node inputs
with ``str()`` in its error reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

MODEL = "FACE2SCENE_MODEL"
FACES = "FACE2SCENE_FACES"
DEGRADATION = "FACE2SCENE_DEGRADATION"
TOKENS = "FACE2SCENE_TOKENS"
FILES = "FACE2SCENE_FILES"
"""File names of the images a Load Gallery loaded (a list of str, in load order): names references in messages."""

CATEGORY = "Face2Scene"
"""The one menu category of the pack."""


@dataclass
class FaceEntry:
    """Faces of one photo.

    Attributes:
        photo: the photo, ``uint8 (H, W, 3)``.
        faces: every detection (``face2scene_core.faces.Face``: box, 5 landmarks, score), largest first.
        usable: indices into ``faces`` whose native-scale crop reaches the minimum face size.
        chosen: index into ``faces`` of the face used, or ``None`` (no usable face).
        reason: why that face was chosen (or why none was).
        aligned: ``AlignedFace`` of the chosen face (512x512 crop, photo->aligned ``matrix``, ``inverse``).
        identity_scores: similarity of each face to the references (``"match references"`` only).
    """

    photo: np.ndarray
    faces: list
    usable: list[int]
    chosen: int | None
    reason: str
    aligned: object | None = None
    identity_scores: list[float] | None = None

    @property
    def has_face(self) -> bool:
        return self.aligned is not None


@dataclass
class Faces:
    """``FACE2SCENE_FACES``: detection + alignment of every image of a batch.

    Attributes:
        entries: one :class:`FaceEntry` per image, in batch order.
        references: aligned reference faces, ``uint8 (512, 512, 3)`` each (may be empty).
        detector: detector backend used.
        size: side of the aligned faces (512).
    """

    entries: list[FaceEntry]
    references: list[np.ndarray] = field(default_factory=list)
    detector: str = "retinaface"
    size: int = 512

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        used = sum(e.has_face for e in self.entries)
        return (f"Faces({len(self.entries)} image(s), {used} with a face, {len(self.references)} reference(s), "
                f"detector={self.detector})")


@dataclass
class DegradationEntry:
    """FaDeX's reading of one image's face pair (all ``None`` when the image has no face).

    Attributes:
        features: spatial degradation features ``float32 (1, C, h, w)`` on the CPU (MapNet's input).
        embedding: L2-normalised degradation embedding ``float32 (D,)``.
        lq_crop, hq_crop: the native-scale (LQ, HQ) face pair FaDeX compared, ``uint8 (n, n, 3)``.
        note: what happened (shown in the preview).
        estimate: the degradation in numbers (:mod:`face2scene_core.fadex.estimate`), when the head is shipped.
    """

    features: torch.Tensor | None = None
    embedding: np.ndarray | None = None
    lq_crop: np.ndarray | None = None
    hq_crop: np.ndarray | None = None
    note: str = ""
    estimate: dict | None = None


@dataclass
class Degradation:
    """``FACE2SCENE_DEGRADATION``: one :class:`DegradationEntry` per image."""

    entries: list[DegradationEntry]

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        used = sum(e.features is not None for e in self.entries)
        return f"Degradation({len(self.entries)} image(s), {used} measured)"


@dataclass
class Tokens:
    """``FACE2SCENE_TOKENS``: MapNet's degradation tokens, ``float32 (1, 21, D)`` on the CPU per image, or
    ``None`` for an image restored without tokens. A single entry applies to every image of a batch."""

    entries: list[torch.Tensor | None]

    def __len__(self) -> int:
        return len(self.entries)

    def for_batch(self, batch: int) -> list[torch.Tensor | None]:
        """One entry per image of a ``batch``-image IMAGE (a single entry is shared)."""
        if len(self.entries) == 1:
            return self.entries * batch
        if len(self.entries) != batch:
            raise ValueError(
                f"tokens were computed for {len(self.entries)} image(s) but the image batch has {batch}; "
                "compute them from the same batch, or from one photo to share them"
            )
        return list(self.entries)

    def __repr__(self) -> str:
        shapes = sorted({tuple(t.shape) for t in self.entries if t is not None})
        return f"Tokens({len(self.entries)} image(s), shapes {shapes})"


__all__ = ["CATEGORY", "DEGRADATION", "FACES", "FILES", "MODEL", "TOKENS", "Degradation", "DegradationEntry", "FaceEntry",
           "Faces", "Tokens"]
