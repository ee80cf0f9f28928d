"""Plain data types shared by detection, alignment, identity and face choice.

Coordinates are in pixels of the photo they were found in, ``x`` to the right and ``y`` down,
with the OpenCV convention that the centre of pixel ``(col, row)`` is at ``(col, row)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_FACE_SIZE = 32
"""Smallest usable face, as the side in photo pixels of its native-scale crop.

FaDeX downsamples by 4 and MapNet's patch embedding by 2 more; the 4x4 token grid needs a 4x4
feature map, so the native crop must be at least 32 px (see ``docs/architecture.md``).
"""

LANDMARK_NAMES = ("left_eye", "right_eye", "nose_tip", "left_mouth", "right_mouth")
"""Order of :attr:`Face.landmarks` rows: left/right *as seen in the image* (image-left first)."""


def as_rgb_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Check an image array and return it as ``uint8 (H, W, 3)`` (grey ``(H, W)``/``(H, W, 1)`` is expanded).

    Raises ``ValueError`` naming ``what`` for another dtype or shape.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{what} must be an (H, W, 3) RGB array, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{what} is empty: shape {arr.shape}")
    return arr


@dataclass
class Face:
    """One detected face.

    Attributes:
        bbox: ``float32 (4,)`` box ``x1, y1, x2, y2`` in photo pixels.
        landmarks: ``float32 (5, 2)`` points ``(x, y)`` in the order of :data:`LANDMARK_NAMES`.
        score: detector confidence in ``[0, 1]``.
    """

    bbox: np.ndarray
    landmarks: np.ndarray
    score: float = 1.0

    def __post_init__(self) -> None:
        bbox = np.asarray(self.bbox, dtype=np.float32).reshape(-1)
        landmarks = np.asarray(self.landmarks, dtype=np.float32)
        if bbox.shape != (4,):
            raise ValueError(f"Face.bbox must have 4 values x1,y1,x2,y2, got shape {np.shape(self.bbox)}")
        if landmarks.shape != (5, 2):
            raise ValueError(f"Face.landmarks must have shape (5, 2), got {np.shape(self.landmarks)}")
        if not (np.all(np.isfinite(bbox)) and np.all(np.isfinite(landmarks))):
            raise ValueError("Face.bbox and Face.landmarks must be finite numbers")
        self.bbox = bbox
        self.landmarks = landmarks
        self.score = float(self.score)

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def to_dict(self) -> dict:
        """JSON-serialisable form (lists of floats)."""
        return {"bbox": self.bbox.tolist(), "landmarks": self.landmarks.tolist(), "score": self.score}

    @classmethod
    def from_dict(cls, data: dict) -> "Face":
        return cls(bbox=data["bbox"], landmarks=data["landmarks"], score=data.get("score", 1.0))


@dataclass
class AlignedFace:
    """A face warped onto the canonical template.

    Attributes:
        image: ``uint8 (size, size, 3)`` RGB aligned face.
        matrix: ``float64 (2, 3)`` similarity transform photo -> aligned.
        inverse: ``float64 (2, 3)`` similarity transform aligned -> photo.
        size: side of the aligned image in pixels.
        face: the :class:`Face` it was aligned from.
    """

    image: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray
    size: int
    face: Face
    meta: dict = field(default_factory=dict)

    @property
    def scale(self) -> float:
        """Aligned pixels per photo pixel (> 1 when the face was enlarged)."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    @property
    def native_size(self) -> float:
        """Side, in photo pixels, of the square the aligned image covers."""
        return self.size / self.scale
