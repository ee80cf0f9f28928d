"""Face2Scene Extract Degradation (FaDeX) and Degradation Tokens (MapNet)."""

from __future__ import annotations

import numpy as np

from .images import degradation_panel, to_arrays, to_image
from .types import CATEGORY, DEGRADATION, FACES, MODEL, TOKENS, Degradation, DegradationEntry, Faces, Tokens


def extract_degradation(model, faces: Faces, hq_faces: list[np.ndarray | None]) -> Degradation:
    """FaDeX on each (LQ, HQ) face pair at the photo's native scale.

    Args:
        model: ``Face2SceneModel``.
        faces: from the detect node.
        hq_faces: restored aligned faces, ``uint8 (S, S, 3)`` per photo (``None`` / ignored where no face).
    """
    from ..face2scene_core.faces.align import native_pair
    from ..face2scene_core.reffr.given import GivenFaceRefFR

    if len(hq_faces) != len(faces):
        raise ValueError(f"restored_faces has {len(hq_faces)} image(s) but faces has {len(faces)}; "
                         "connect the Ref-FR output made from these faces")
    fadex = model.fadex() if any(e.has_face for e in faces.entries) else None
    estimator = model.helper("estimator", lambda: _estimator(fadex)) if fadex is not None else None
    entries = []
    for entry, hq in zip(faces.entries, hq_faces):
        if not entry.has_face:
            entries.append(DegradationEntry(note=f"no degradation measured: {entry.reason}"))
            continue
        hq = GivenFaceRefFR(hq, size=entry.aligned.size).hq_face  # any square size -> the aligned size
        lq_crop, hq_crop = native_pair(entry.photo, entry.aligned, hq)
        out = fadex.encode_pair(lq_crop, hq_crop)
        entries.append(DegradationEntry(
            features=out.features.float().cpu(), embedding=out.embedding[0].float().cpu().numpy(),
            lq_crop=lq_crop, hq_crop=hq_crop, note=f"native face crop {lq_crop.shape[0]} px",
            estimate=estimator(out, float(lq_crop.shape[0])) if estimator is not None else None))
    return Degradation(entries)


def _estimator(fadex):
    from ..face2scene_core.fadex.estimate import Estimator
    from ..face2scene_core.pipeline import EMBEDDED_DIR

    return Estimator.for_fadex(EMBEDDED_DIR / "estimate", fadex)


def estimates_text(degradation: Degradation) -> str:
    """One line per image: the estimated degradation, or why there is none."""
    from ..face2scene_core.fadex.estimate import describe

    lines = []
    for i, e in enumerate(degradation.entries, 1):
        what = describe(e.estimate) if e.estimate else (e.note if e.features is None else "no estimate head "
                                                        "for this FaDeX")
        lines.append(f"image {i}: {what}")
    return "\n".join(lines)


def degradation_tokens(model, degradation: Degradation) -> Tokens:
    """MapNet (inside the restorer): FaDeX features -> ``float32 (1, 21, D)`` tokens per image, on the CPU."""
    restorer = model.restorer() if any(e.features is not None for e in degradation.entries) else None
    out = []
    for entry in degradation.entries:
        if entry.features is None:
            out.append(None)
            continue
        tokens = restorer.tokens_from_features(entry.features)
        out.append(None if tokens is None else tokens.float().cpu())
    return Tokens(out)


class Face2SceneExtractDegradation:
    DESCRIPTION = ("FaDeX: compares each degraded face with its restored version at the photo's own scale and "
                   "encodes the degradation between them. The preview shows the face pair, their difference, the "
                   "feature map and the embedding.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (DEGRADATION, "IMAGE", "STRING")
    RETURN_NAMES = ("degradation", "preview", "estimate")
    OUTPUT_TOOLTIPS = ("FaDeX features and embedding per photo.",
                       "2x2 grid: LQ face | Ref-FR face over difference x4 | FaDeX features (3 principal "
                       "components); embedding strip and the estimated degradation below.",
                       "The degradation in numbers, one line per photo: blur and motion (px), noise (8-bit levels), "
                       "JPEG quality, down-up scale, each with its uncertainty.")
    FUNCTION = "extract"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "From Face2Scene Model Loader."}),
            "faces": (FACES, {"tooltip": "From Face2Scene Detect & Align Faces."}),
            "restored_faces": ("IMAGE", {"tooltip": "Restored aligned faces (Face2Scene Ref-FR, or any face "
                                                    "restorer fed with 'aligned_faces')."}),
        }}

    def extract(self, model, faces, restored_faces):
        degradation = extract_degradation(model, faces, to_arrays(restored_faces, "restored_faces"))
        return (degradation, to_image([degradation_panel(e) for e in degradation.entries]),
                estimates_text(degradation))


class Face2SceneDegradationTokens:
    DESCRIPTION = ("MapNet: turns the FaDeX degradation features into 21 tokens (1 + 4 + 16 grid cells) that "
                   "condition the one-step restorer.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (TOKENS,)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = ("Degradation tokens for Face2Scene One-Step Restore.",)
    FUNCTION = "tokens"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "From Face2Scene Model Loader (MapNet lives in its restorer)."}),
            "degradation": (DEGRADATION, {"tooltip": "From Face2Scene Extract Degradation."}),
        }}

    def tokens(self, model, degradation):
        return (degradation_tokens(model, degradation),)


__all__ = ["Face2SceneDegradationTokens", "Face2SceneExtractDegradation", "degradation_tokens", "estimates_text",
           "extract_degradation"]
