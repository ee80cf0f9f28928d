"""Face alignment to the FFHQ 5-point template, the native-scale crop, soft masks and paste-back.

    aligned = align_face(photo, face)                   # 512x512 canonical face
    lq, hq = native_pair(photo, aligned, restored)      # what FaDeX sees, at the photo's own scale
    out = paste_back(photo, restored, aligned)          # restored face feathered into the photo

Degradation must be measured at the face's *native* scale (resizing changes blur and noise), so
:func:`native_pair` warps the restored aligned face back into a crop of the photo rather than
resizing the photo crop up to 512.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from ..errors import FaceTooSmallError
from .types import MIN_FACE_SIZE, AlignedFace, Face, as_rgb_uint8
from .warp import affine_scale, invert_affine, transform_points, translate, warp_affine

logger = logging.getLogger(__name__)

FFHQ_TEMPLATE_512 = np.array(
    [[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41], [313.09, 371.15]],
    dtype=np.float64,
)
"""5-point FFHQ template for 512x512 (GFPGAN/CodeFormer ``face_restoration_helper``), landmark order of
:data:`~face2scene_core.faces.types.LANDMARK_NAMES`."""

INTERPOLATION = "cubic"
"""Used for photo->aligned and aligned->photo warps: on real faces a photo->aligned->photo round trip
differs from the photo by ~1.7 grey levels on average with cubic, ~3.1 with bilinear."""

DEFAULT_BORDER_VALUE = (135, 133, 132)
"""Fill colour where the aligned square leaves the photo (the value facexlib's helper uses)."""


def face_template(size: int = 512) -> np.ndarray:
    """The 5-point template scaled to a ``size x size`` aligned face, ``float64 (5, 2)``."""
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def estimate_alignment(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """Similarity transform photo -> aligned (``float64 (2, 3)``) fitting ``landmarks`` (5, 2) to the template.

    Uses ``cv2.estimateAffinePartial2D`` with LMEDS (robust to one bad landmark).
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2), got {pts.shape}")
    matrix, _ = cv2.estimateAffinePartial2D(pts, face_template(size), method=cv2.LMEDS)
    if matrix is None or not np.all(np.isfinite(matrix)) or affine_scale(matrix) <= 1e-6:
        raise ValueError(f"cannot fit a similarity transform to degenerate landmarks {pts.tolist()}")
    return matrix.astype(np.float64)


def _too_small(side: float, min_face_size: int, cut: bool) -> FaceTooSmallError:
    where = " after cutting it to the photo border" if cut else ""
    return FaceTooSmallError(
        f"The face is {int(side)} px{where} (side of its native-scale crop) and the minimum is "
        f"{min_face_size} px. Use a larger or higher-resolution photo in which the face is bigger, "
        "or choose another face."
    )


def align_face(
    image: np.ndarray,
    face: Face,
    size: int = 512,
    *,
    min_face_size: int = MIN_FACE_SIZE,
    border_value: tuple[int, int, int] = DEFAULT_BORDER_VALUE,
) -> AlignedFace:
    """Warp ``face`` of ``image`` onto the canonical ``size x size`` template.

    Args:
        image: ``uint8 (H, W, 3)`` RGB photo.
        face: the detected face (its 5 landmarks are used).
        size: side of the aligned face (512 for the Ref-FR models).
        min_face_size: raise :class:`FaceTooSmallError` when the native crop side is below this
            (0 disables the check).
        border_value: RGB fill where the aligned square extends outside the photo.

    Returns:
        :class:`AlignedFace` with ``image (size, size, 3) uint8``, ``matrix`` photo->aligned and
        ``inverse`` aligned->photo. A face larger than ``size`` in the photo is area-filtered, not aliased.
    """
    rgb = as_rgb_uint8(image)
    if not isinstance(face, Face):
        raise ValueError(f"face must be a Face, got {type(face).__name__}")
    if min_face_size < 0:
        raise ValueError(f"min_face_size must be >= 0, got {min_face_size}")
    matrix = estimate_alignment(face.landmarks, size)
    native = size / affine_scale(matrix)
    if native < min_face_size:
        raise _too_small(native, min_face_size, cut=False)
    warped = warp_affine(
        rgb,
        matrix,
        (size, size),
        interpolation=INTERPOLATION,
        border_mode=cv2.BORDER_CONSTANT,
        border_value=tuple(int(v) for v in border_value),
    )
    return AlignedFace(image=warped, matrix=matrix, inverse=invert_affine(matrix), size=int(size), face=face)


def _check_aligned(aligned: AlignedFace) -> None:
    if not isinstance(aligned, AlignedFace):
        raise ValueError(f"aligned must be an AlignedFace (from align_face), got {type(aligned).__name__}")


def _photo_hw(photo_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(photo_shape) < 2 or photo_shape[0] < 1 or photo_shape[1] < 1:
        raise ValueError(f"photo_shape must be (H, W[, C]) with positive sizes, got {photo_shape}")
    return int(photo_shape[0]), int(photo_shape[1])


def native_crop_box(aligned: AlignedFace, photo_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Square box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of the face at the photo's native scale.

    The box is the largest axis-aligned square that lies both inside the photo and inside the
    (possibly rotated) area the aligned square covers, centred on the face as far as the photo
    allows. So every pixel of the box has a photo pixel *and* an aligned-face pixel: this is the
    region FaDeX compares. For an upright face away from the border its side is
    ``size / scale`` (``aligned.native_size``).
    """
    _check_aligned(aligned)
    h, w = _photo_hw(photo_shape)
    s = aligned.size
    cx, cy = transform_points(np.array([[(s - 1) / 2.0, (s - 1) / 2.0]]), aligned.inverse)[0]
    lin = aligned.inverse[:, :2] / affine_scale(aligned.inverse)
    rot = abs(lin[0, 0]) + abs(lin[1, 0])  # |cos| + |sin| of the rotation
    half = s / affine_scale(aligned.matrix) / rot / 2.0
    # continuous extents (pixel i spans [i - 0.5, i + 0.5]), cut to the photo
    left, right = max(cx - half, -0.5), min(cx + half, w - 0.5)
    top, bottom = max(cy - half, -0.5), min(cy + half, h - 0.5)
    x0, x1 = math.ceil(left + 0.5 - 1e-6), math.floor(right - 0.5 + 1e-6) + 1
    y0, y1 = math.ceil(top + 0.5 - 1e-6), math.floor(bottom - 0.5 + 1e-6) + 1
    side = max(0, min(x1 - x0, y1 - y0))
    bx = min(max(round(cx - (side - 1) / 2.0), x0), x1 - side)
    by = min(max(round(cy - (side - 1) / 2.0), y0), y1 - side)
    return int(bx), int(by), int(bx + side), int(by + side)


def _hq_inverse(aligned: AlignedFace, hq: np.ndarray) -> np.ndarray:
    """aligned-HQ -> photo transform for an HQ face of any square size."""
    k = aligned.size / hq.shape[0]
    return aligned.inverse @ np.diag([k, k, 1.0])


def _check_hq(hq: np.ndarray, what: str) -> np.ndarray:
    arr = as_rgb_uint8(hq, what)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{what} must be a square aligned face, got shape {arr.shape}")
    return arr


def native_pair(
    photo: np.ndarray,
    aligned: AlignedFace,
    aligned_hq: np.ndarray,
    *,
    min_face_size: int = MIN_FACE_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """The (LQ, HQ) face pair at the photo's native scale, as FaDeX sees it.

    Args:
        photo: ``uint8 (H, W, 3)`` the photo ``aligned`` was made from.
        aligned: from :func:`align_face`.
        aligned_hq: ``uint8 (S, S, 3)`` restored aligned face (any square ``S``; usually ``aligned.size``).
        min_face_size: :class:`FaceTooSmallError` when the crop side is below this.

    Returns:
        ``(lq_crop, hq_crop)``: both ``uint8 (n, n, 3)``, ``n`` the side of :func:`native_crop_box`;
        ``lq_crop`` is the photo's pixels, ``hq_crop`` the HQ face warped back onto the same pixels
        (area-filtered when shrinking, so the warp adds no aliasing).
    """
    rgb = as_rgb_uint8(photo, "photo")
    hq = _check_hq(aligned_hq, "aligned_hq")
    x0, y0, x1, y1 = native_crop_box(aligned, rgb.shape)
    side = x1 - x0
    if side < max(min_face_size, 1):
        raise _too_small(side, min_face_size, cut=aligned.native_size >= min_face_size)
    lq = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    hq_crop = warp_affine(
        hq, translate(_hq_inverse(aligned, hq), -x0, -y0), (side, side), interpolation=INTERPOLATION,
        border_mode=cv2.BORDER_REPLICATE,
    )
    return lq, hq_crop


def _aligned_mask(size: int, feather: float) -> np.ndarray:
    """``float32 (size, size)`` 1 inside the aligned square, smooth ramp to 0 over ``feather * size`` at its edges."""
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather must be in [0, 0.5] (fraction of the aligned size), got {feather}")
    idx = np.arange(size, dtype=np.float32)
    d = np.minimum(idx + 0.5, size - 0.5 - idx)  # distance of each pixel centre to the square's edge
    if feather == 0:
        ramp = np.ones_like(d)
    else:
        t = np.clip(d / (feather * size), 0.0, 1.0)
        ramp = t * t * (3.0 - 2.0 * t)  # smoothstep
    return np.minimum(ramp[:, None], ramp[None, :])


def _roi(aligned: AlignedFace, h: int, w: int) -> tuple[int, int, int, int] | None:
    """Integer box of the photo that the aligned square covers (None when it is outside)."""
    s = aligned.size
    edges = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [-0.5, s - 0.5], [s - 0.5, s - 0.5]])
    corners = transform_points(edges, aligned.inverse)
    x0, y0 = max(int(np.floor(corners[:, 0].min())), 0), max(int(np.floor(corners[:, 1].min())), 0)
    x1, y1 = min(int(np.ceil(corners[:, 0].max())) + 1, w), min(int(np.ceil(corners[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _mask_roi(aligned: AlignedFace, box: tuple[int, int, int, int], feather: float) -> np.ndarray:
    x0, y0, x1, y1 = box
    m = _aligned_mask(aligned.size, feather)
    out = warp_affine(m, translate(aligned.inverse, -x0, -y0), (x1 - x0, y1 - y0), border_mode=cv2.BORDER_CONSTANT)
    return np.clip(out.reshape(y1 - y0, x1 - x0), 0.0, 1.0).astype(np.float32)


def face_mask(aligned: AlignedFace, photo_shape: tuple[int, ...], feather: float = 0.1) -> np.ndarray:
    """Soft mask of the aligned face's area in the photo.

    Args:
        aligned: from :func:`align_face`.
        photo_shape: ``(H, W[, C])`` of the photo.
        feather: width of the soft edge as a fraction of the aligned square's side, in ``[0, 0.5]``
            (0: hard edge; 0.1: the outer 10% fades out with a smoothstep).

    Returns:
        ``float32 (H, W)`` in ``[0, 1]``: 1 on the face, 0 away from it.
    """
    _check_aligned(aligned)
    h, w = _photo_hw(photo_shape)
    _aligned_mask(8, feather)  # validate feather even when the face is outside the photo
    mask = np.zeros((h, w), dtype=np.float32)
    box = _roi(aligned, h, w)
    if box is not None:
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = _mask_roi(aligned, box, feather)
    return mask


def paste_back(
    photo: np.ndarray, aligned_face_image: np.ndarray, aligned: AlignedFace, feather: float = 0.1
) -> np.ndarray:
    """Warp an aligned face back into the photo and blend it in with a feathered mask.

    Args:
        photo: ``uint8 (H, W, 3)``, the photo ``aligned`` was made from (or a restored version of it
            with the same size).
        aligned_face_image: ``uint8 (S, S, 3)`` aligned face (e.g. the Ref-FR output; any square ``S``).
        aligned: from :func:`align_face`.
        feather: see :func:`face_mask`.

    Returns:
        a new ``uint8 (H, W, 3)`` photo; pixels outside the face's square are unchanged.
    """
    rgb = as_rgb_uint8(photo, "photo")
    hq = _check_hq(aligned_face_image, "aligned_face_image")
    _check_aligned(aligned)
    out = rgb.copy()
    h, w = rgb.shape[:2]
    box = _roi(aligned, h, w)
    if box is None:
        logger.warning("paste_back: the face's square lies outside the photo; nothing pasted")
        return out
    x0, y0, x1, y1 = box
    m = _mask_roi(aligned, box, feather)[:, :, None]
    face = warp_affine(
        hq, translate(_hq_inverse(aligned, hq), -x0, -y0), (x1 - x0, y1 - y0), interpolation=INTERPOLATION,
        border_mode=cv2.BORDER_REPLICATE,
    )
    blend = m * face.astype(np.float32) + (1.0 - m) * rgb[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    return out
