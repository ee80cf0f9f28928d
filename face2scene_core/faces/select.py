"""Choosing which face of a photo to restore, and preparing the reference faces.

    aligned_refs, ref_emb = prepare_references([ref1, ref2], detector, embedder)
    faces = detector.detect(photo)
    index, reason = select_face(faces, "reference", image=photo, embedder=embedder,
                                reference_embeddings=ref_emb)
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from ..errors import FaceTooSmallError, NoFaceError, ReferenceImageError
from ..imageio import load_image
from .align import align_face
from .types import AlignedFace, Face

logger = logging.getLogger(__name__)

SELECT_MODES = ("reference", "largest", "index")


def mean_embedding(embeddings: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """L2-normalised mean of ``(N, D)`` embeddings, ``float32 (D,)``."""
    arr = np.asarray(embeddings, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (N, D) array, got shape {arr.shape}")
    arr = arr / np.linalg.norm(arr, axis=1, keepdims=True).clip(1e-12)
    mean = arr.mean(axis=0)
    norm = np.linalg.norm(mean)
    if norm < 1e-12:
        raise ValueError("the reference embeddings cancel out; check the references")
    return (mean / norm).astype(np.float32)


def rank_by_reference(
    image: np.ndarray, faces: Sequence[Face], embedder, reference_embeddings: np.ndarray
) -> list[tuple[int, float]]:
    """``(face index, similarity to the mean reference)`` for every face, most similar first."""
    ref = mean_embedding(reference_embeddings)
    scores = [(i, embedder.similarity(embedder.embed(image, f), ref)) for i, f in enumerate(faces)]
    return sorted(scores, key=lambda t: t[1], reverse=True)


def select_face(
    faces: Sequence[Face],
    mode: str = "reference",
    *,
    image: np.ndarray | None = None,
    embedder=None,
    reference_embeddings: np.ndarray | None = None,
    index: int = 0,
    threshold: float | None = None,
    strict: bool = False,
) -> tuple[int, str]:
    """Pick one face of a photo.

    Args:
        faces: detected faces (any order).
        mode: ``"reference"`` (most similar to the mean reference embedding), ``"largest"`` (biggest
            box) or ``"index"`` (``faces[index]``).
        image: the photo (``uint8 (H, W, 3)``), needed by ``"reference"``.
        embedder: identity embedder (``get_embedder()``), needed by ``"reference"``.
        reference_embeddings: ``(N, D)`` embeddings of the references, needed by ``"reference"``.
        index: face index for ``"index"`` (0 = first in ``faces``; detectors list the largest first).
        threshold: similarity a match must reach (default: ``embedder.match_threshold``).
        strict: in ``"reference"`` mode, raise :class:`ReferenceImageError` when no face reaches
            ``threshold`` instead of returning the closest one with a warning.

    Returns:
        ``(index, reason)``: the chosen index into ``faces`` and a sentence saying why (with the
        similarity score in ``"reference"`` mode).
    """
    if mode not in SELECT_MODES:
        raise ValueError(f"mode must be one of {SELECT_MODES}, got {mode!r}")
    faces = list(faces)
    if not faces:
        raise NoFaceError(
            "No face was found in the photo. Use a photo where the face is visible and at least ~32 px, "
            "or lower the detector's score_threshold (or build it with verify=False for blurred faces)."
        )
    n = len(faces)
    if mode == "largest":
        i = int(np.argmax([f.area for f in faces]))
        f = faces[i]
        return i, f"face {i} of {n} is the largest ({f.width:.0f}x{f.height:.0f} px)"
    if mode == "index":
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"index must be an integer >= 0, got {index!r}")
        if index >= n:
            raise NoFaceError(
                f"Face index {index} was asked for but only {n} face(s) were found (indices 0..{n - 1}, "
                "largest first). Choose a smaller index or mode='largest'."
            )
        return int(index), f"face {index} of {n} was chosen by index"
    if image is None or embedder is None or reference_embeddings is None:
        raise ValueError("mode='reference' needs image, embedder and reference_embeddings")
    thr = float(embedder.match_threshold if threshold is None else threshold)
    ranking = rank_by_reference(image, faces, embedder, reference_embeddings)
    best, score = ranking[0]
    runner = f"; next best {ranking[1][1]:.3f} (face {ranking[1][0]})" if n > 1 else ""
    if score < thr:
        msg = (
            f"none of the {n} face(s) matches the references: the closest is face {best} with similarity "
            f"{score:.3f}, below the threshold {thr:.3f}"
        )
        if strict:
            raise ReferenceImageError(
                f"{msg.capitalize()}. Check that the reference photos show the person in this photo, or use "
                "mode='largest' / mode='index'."
            )
        logger.warning("select_face: %s; using it anyway", msg)
        return best, (
            f"face {best} of {n} is the closest to the references but below the match threshold "
            f"(similarity {score:.3f} < {thr:.3f}{runner})"
        )
    return best, f"face {best} of {n} matches the references best (similarity {score:.3f} >= {thr:.3f}{runner})"


def prepare_references(
    images: Sequence[np.ndarray | str | os.PathLike],
    detector,
    embedder,
    size: int = 512,
    *,
    names: Sequence[str] | None = None,
) -> tuple[list[AlignedFace], np.ndarray]:
    """Detect, align and embed the largest face of each reference photo.

    Args:
        images: reference photos, ``uint8 (H, W, 3)`` arrays or image paths.
        detector: from ``get_detector()``.
        embedder: from ``get_embedder()``.
        size: aligned face size.
        names: optional labels used in messages (default: the file name, or ``#i``).

    Returns:
        ``(aligned_faces, embeddings)``: one :class:`AlignedFace` per reference and a ``float32 (N, D)``
        array of L2-normalised embeddings.

    Raises:
        ReferenceImageError: no references, or a reference with no usable face (named in the message).
    """
    images = list(images)
    if not images:
        raise ReferenceImageError("No reference image was given. Add at least one clear photo of the person.")
    if names is not None and len(names) != len(images):
        raise ValueError(f"names has {len(names)} entries but there are {len(images)} reference images")
    aligned_faces, embeddings = [], []
    for i, img in enumerate(images):
        is_path = isinstance(img, (str, os.PathLike))
        label = names[i] if names is not None else (os.path.basename(os.fspath(img)) if is_path else f"#{i}")
        where = f"reference {i + 1} of {len(images)} ({label})"
        photo = load_image(img) if is_path else img
        faces = detector.detect(photo)
        if not faces:
            raise ReferenceImageError(
                f"No face found in {where}. Use a photo where the person's face is clearly visible "
                "(ideally frontal and at least ~64 px wide), or remove this reference."
            )
        k = int(np.argmax([f.area for f in faces]))
        if len(faces) > 1:
            logger.info("%s: %d faces, using the largest", where, len(faces))
        try:
            aligned = align_face(photo, faces[k], size)
        except FaceTooSmallError as exc:
            raise ReferenceImageError(f"The face in {where} is too small: {exc}") from exc
        aligned_faces.append(aligned)
        embeddings.append(embedder.embed(photo, faces[k]))
    emb = np.stack(embeddings).astype(np.float32)
    if len(emb) > 1:
        thr = embedder.match_threshold
        for i in range(len(emb)):
            others = np.delete(emb, i, axis=0)
            sim = embedder.similarity(emb[i], mean_embedding(others))
            if sim < thr:
                logger.warning(
                    "reference %d of %d may show a different person than the others (similarity %.3f < %.3f)",
                    i + 1, len(emb), sim, thr,
                )
    return aligned_faces, emb
