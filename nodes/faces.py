"""Face2Scene Detect & Align Faces: which face of each photo drives the restoration, aligned to 512x512."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..face2scene_core.errors import FaceTooSmallError, NoFaceError
from . import folders
from .images import annotate_faces, grey, to_arrays, to_image
from .types import CATEGORY, FACES, FILES, FaceEntry, Faces

log = logging.getLogger(__name__)

FACE_CHOICES = ("match references", "largest", "index")
DETECTORS = ("retinaface", "insightface")
NO_FACE_CHOICES = ("error", "restore without tokens")
ALIGN_SIZE = 512
REFERENCES_TOOLTIP = ("Clean photos of the same person, as one IMAGE batch (photos of different sizes: Face2Scene "
                      "Load Gallery in 'batch (pad to largest)' mode).")


def make_detector(backend: str):
    """The core's face detector: ``retinaface`` (shipped ONNX) or ``insightface`` (ComfyUI's insightface folder)."""
    from ..face2scene_core.faces.detect import get_detector

    if backend not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {backend!r}")
    if backend == "insightface":
        return get_detector("insightface", model_dir=folders.insightface_model_dir())
    return get_detector("retinaface")


def make_embedder():
    from ..face2scene_core.faces.identity import get_embedder

    return get_embedder("dlib")


def native_side(face) -> float:
    """Side in photo pixels of the face's native-scale crop (what the minimum face size applies to)."""
    from ..face2scene_core.faces.align import estimate_alignment
    from ..face2scene_core.faces.warp import affine_scale

    return ALIGN_SIZE / affine_scale(estimate_alignment(face.landmarks, ALIGN_SIZE))


def _choose(photo, faces, usable, mode, index, embedder, ref_emb) -> tuple[int, str, list[float] | None]:
    from ..face2scene_core.faces.identity import mismatch_message
    from ..face2scene_core.faces.select import rank_by_reference

    if mode == "match references" and ref_emb is not None:
        ranked = rank_by_reference(photo, faces, embedder, ref_emb)  # most similar first
        scores = [0.0] * len(faces)
        for i, s in ranked:
            scores[i] = round(float(s), 4)
        best, sim = next((i, s) for i, s in ranked if i in usable)
        thr = float(embedder.match_threshold)
        verdict = (f"matches the references best (similarity {sim:.3f} >= {thr:.3f})" if sim >= thr else
                   f"is the closest to the references, but its {mismatch_message(embedder, sim)}")
        if sim < thr:
            log.warning("face %d: %s", best, verdict)
        return best, f"face {best} of {len(faces)} {verdict}", scores
    if mode == "index":
        if index >= len(faces):
            raise NoFaceError(f"face index {index} was asked for but {len(faces)} face(s) were found (0 = largest); "
                              "choose a smaller index or 'largest'.")
        if index not in usable:
            raise FaceTooSmallError(f"face {index} is smaller than the minimum face size; choose another face "
                                    "or lower min_face_size.")
        return index, f"face {index} of {len(faces)} was chosen by index", None
    best = max(usable, key=lambda i: faces[i].area)
    size = f"{faces[best].width:.0f}x{faces[best].height:.0f} px"
    reason = f"face {best} of {len(faces)} is the largest{' usable' if len(usable) < len(faces) else ''} ({size})"
    if mode == "match references":
        reason += "; no references were given"
    return best, reason, None


REFERENCE_FILES_TOOLTIP = ("Optional: the 'files' output of the Face2Scene Load Gallery that loads the references, so a "
                           "reference without a face is named by its file instead of its number.")


def reference_names(files, references: list) -> list[str] | None:
    """The references' file names from a Load Gallery ``files`` output (``None``: not connected)."""
    if files is None:
        return None
    names = [str(n) for n in files]
    if len(names) != len(references):
        raise ValueError(f"reference_files names {len(names)} file(s) but there are {len(references)} reference "
                         "image(s); connect the 'files' output of the Load Gallery that loads these references.")
    return names


def prepare_references(references: list[np.ndarray], detector, embedder, names: list[str] | None = None
                       ) -> tuple[list[np.ndarray], np.ndarray]:
    """Aligned reference faces ``uint8 (512, 512, 3)`` and their identity embeddings ``(N, D)``; ``names`` (file
    names) label a reference without a face in the error."""
    from ..face2scene_core.faces.select import prepare_references as prepare

    aligned, emb = prepare(references, detector, embedder, size=ALIGN_SIZE, names=names)
    return [a.image for a in aligned], emb


def detect_faces(photos: list[np.ndarray], references: list[np.ndarray], *, face: str = "match references",
                 index: int = 0, min_face_size: int = 32, if_no_face: str = "error", detector=None,
                 embedder=None, detector_name: str = "retinaface", prepared=None,
                 reference_names: list[str] | None = None) -> Faces:
    """Detect, choose and align one face per photo (Stage I), and align the references.

    Args:
        photos: ``uint8 (H, W, 3)`` photos (one IMAGE batch).
        references: clean photos of the person, ``uint8 (h, w, 3)`` each (any sizes); may be empty.
        face: ``"match references"`` (most similar to the references; largest without references),
            ``"largest"`` or ``"index"`` (0 = largest).
        index: face index for ``"index"``.
        min_face_size: smallest usable face, as the side of its native-scale crop in photo pixels (>= 32).
        if_no_face: ``"error"`` or ``"restore without tokens"`` (the entry stays empty).
        detector, embedder: core detector / identity embedder (built when ``None``).
        prepared: ``prepare_references(references, ...)`` computed before (reused across photos).
        reference_names: file names of ``references`` (messages name a reference without a face by file).

    Raises:
        NoFaceError / FaceTooSmallError / ReferenceImageError: with the image number and what to do.
    """
    from ..face2scene_core.faces.align import align_face

    if face not in FACE_CHOICES or if_no_face not in NO_FACE_CHOICES:
        raise ValueError(f"face must be one of {FACE_CHOICES} and if_no_face one of {NO_FACE_CHOICES}, "
                         f"got {face!r}, {if_no_face!r}")
    if min_face_size < 32:
        raise ValueError(f"min_face_size must be >= 32 (FaDeX's 4x4 token grid needs it), got {min_face_size}")
    detector = detector or make_detector(detector_name)
    ref_aligned, ref_emb = [], None
    if references:
        embedder = embedder or make_embedder()
        ref_aligned, ref_emb = prepared or prepare_references(references, detector, embedder, reference_names)
    entries = []
    for n, photo in enumerate(photos):
        where = f"image {n + 1} of {len(photos)} ({photo.shape[1]}x{photo.shape[0]})"
        faces = detector.detect(photo)
        usable = [i for i, f in enumerate(faces) if native_side(f) >= min_face_size]
        try:
            if not faces:
                raise NoFaceError(f"No face found in {where}. Face2Scene reads the degradation from a face: use a "
                                  "photo with a visible face, or set if_no_face to 'restore without tokens'.")
            if not usable:
                raise FaceTooSmallError(
                    f"The {len(faces)} face(s) in {where} are all smaller than min_face_size={min_face_size} px "
                    "(side of the native face crop). Use a larger photo, lower min_face_size (>= 32), or set "
                    "if_no_face to 'restore without tokens'.")
            chosen, reason, scores = _choose(photo, faces, usable, face, index, embedder, ref_emb)
            aligned = align_face(photo, faces[chosen], ALIGN_SIZE, min_face_size=min_face_size)
        except (NoFaceError, FaceTooSmallError) as exc:
            if if_no_face == "error":
                raise
            log.warning("%s -- restoring it without degradation tokens", exc)
            entries.append(FaceEntry(photo, faces, usable, None, f"no usable face: {exc}"))
            continue
        entries.append(FaceEntry(photo, faces, usable, chosen, reason, aligned, scores))
    return Faces(entries, ref_aligned, detector=getattr(detector, "name", detector_name), size=ALIGN_SIZE)


def face_outputs(faces: Faces) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Aligned faces IMAGE ``[B, 512, 512, 3]`` (grey where none), annotated photos IMAGE, face MASK ``[B, H, W]``."""
    from ..face2scene_core.faces.align import face_mask

    aligned = [e.aligned.image if e.has_face else grey(faces.size, faces.size) for e in faces.entries]
    annotated = [annotate_faces(e) for e in faces.entries]
    masks = [face_mask(e.aligned, e.photo.shape) if e.has_face else np.zeros(e.photo.shape[:2], np.float32)
             for e in faces.entries]
    return to_image(aligned), to_image(annotated), torch.from_numpy(np.stack(masks))


class Face2SceneDetectFaces:
    DESCRIPTION = ("Finds the faces of each photo (5 landmarks), picks the one that drives the restoration "
                   "(best match to the reference photos, the largest, or by index) and aligns it to 512x512. "
                   "The aligned faces can also go to any other face-restoration node.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (FACES, "IMAGE", "IMAGE", "MASK")
    RETURN_NAMES = ("faces", "aligned_faces", "annotated", "face_mask")
    OUTPUT_TOOLTIPS = ("Detections, chosen face, alignment transforms, aligned references.",
                       "The chosen face of each photo, aligned to 512x512 (grey when none).",
                       "Each photo with every face boxed: chosen in green, and why.",
                       "Soft mask of the chosen face in each photo.")
    FUNCTION = "detect"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The degraded photo(s)."}),
                "face": (list(FACE_CHOICES), {"default": "match references", "tooltip": "Which face to use: the "
                         "one most like the references (largest if none are given), the largest, or by index."}),
                "index": ("INT", {"default": 0, "min": 0, "max": 255,
                                  "tooltip": "Face index for 'index' (0 = largest)."}),
                "detector": (list(DETECTORS), {"default": "retinaface", "tooltip": "retinaface: shipped, offline. "
                             "insightface: a model pack from models/insightface (e.g. buffalo_l)."}),
                "min_face_size": ("INT", {"default": 32, "min": 32, "max": 4096, "tooltip": "Smallest usable face: "
                                  "side in pixels of its native-scale crop (about twice the face width)."}),
                "if_no_face": (list(NO_FACE_CHOICES), {"default": "error", "tooltip": "What to do with a photo "
                               "without a usable face: stop with an error, or restore it without degradation tokens."}),
            },
            "optional": {"references": ("IMAGE", {"tooltip": REFERENCES_TOOLTIP}),
                         "reference_files": (FILES, {"tooltip": REFERENCE_FILES_TOOLTIP})},
        }

    def detect(self, image, face, index, detector, min_face_size, if_no_face, references=None, reference_files=None):
        refs = to_arrays(references, "references") if references is not None else []
        faces = detect_faces(to_arrays(image), refs, face=face, index=index, min_face_size=min_face_size,
                             if_no_face=if_no_face, detector_name=detector,
                             reference_names=reference_names(reference_files, refs))
        return (faces, *face_outputs(faces))


__all__ = ["DETECTORS", "FACE_CHOICES", "NO_FACE_CHOICES", "Face2SceneDetectFaces", "detect_faces", "face_outputs",
           "make_detector", "make_embedder", "native_side", "prepare_references", "reference_names",
           "REFERENCE_FILES_TOOLTIP", "REFERENCES_TOOLTIP"]
