"""The face check: the face oracle decides how much of the restorer's correction a photo gets (do no harm).

Face2Scene already has, for the face, a second opinion on what the clean photo looks like: the Ref-FR face
``R``. After the whole photo is restored, the restorer's change on the face, ``d = O - L`` (restored minus
degraded, on the native face crop FaDeX compared), is projected on the change the Ref-FR made there,
``e = R - L``::

    strength = clip(<d, e> / <d, d>, 0, 1)

i.e. the scale of the restorer's correction that brings the face closest to the Ref-FR face. The photo is then
``L + strength * (O - L)`` everywhere: the degradation is the same across the photo, so the face's verdict holds
for the body and background too. A correction the face agrees with (noise the Ref-FR also removed) keeps
``strength ~ 1``; one it does not (contrast or sharpening that a mildly degraded face does not need, texture
smoothed away from a light JPEG) is scaled down, to nothing when the two changes are unrelated.

The check can only scale the correction down, never amplify it, and costs one projection on a face crop plus one
blend. Measured on train photos at 1 MP before it was made the default (docs/results.md, "v5 + the face check").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: below this mean squared change (8-bit levels^2 per value) on the face the restorer changed nothing worth checking
MIN_CHANGE = 0.01


@dataclass(frozen=True)
class FaceCheck:
    """The verdict: ``strength`` in [0, 1] (the share of the correction applied), ``agreement`` (cosine between
    the restorer's and the Ref-FR's change on the face, in [-1, 1]), ``change`` (RMS of the restorer's change on the
    face, 8-bit levels)."""

    strength: float
    agreement: float
    change: float

    def as_report(self) -> dict:
        return {"strength": round(self.strength, 3), "agreement": round(self.agreement, 3),
                "face_change_rms": round(self.change, 3)}


def face_check(photo: np.ndarray, restored: np.ndarray, aligned, hq_face: np.ndarray) -> FaceCheck:
    """The strength the face supports for ``restored`` (the whole photo restored from ``photo``).

    Args:
        photo: the degraded photo, ``uint8 (H, W, 3)`` (the one the face was aligned on).
        restored: the restorer's output, ``uint8`` or ``uint16 (H, W, 3)``, same size.
        aligned: the face's :class:`~face2scene_core.faces.align.AlignedFace`.
        hq_face: the Ref-FR face, aligned (``uint8 (S, S, 3)``).
    """
    from .faces.align import native_crop_box, native_pair
    from .imageio import _to8

    if restored.shape[:2] != photo.shape[:2]:
        raise ValueError(f"face check: restored {restored.shape[:2]} and photo {photo.shape[:2]} differ in size")
    if restored.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"face check: expected a uint8 or uint16 image, got {restored.dtype}")
    lq, ref = native_pair(photo, aligned, hq_face)
    x0, y0, x1, y1 = native_crop_box(aligned, photo.shape)  # the same pixels as lq: the Ref-FR face is warped once
    out = restored[y0:y1, x0:x1]
    out = _to8(out) if out.dtype == np.uint16 else out
    lq = lq.astype(np.float64)
    d = (out.astype(np.float64) - lq).ravel()
    e = (ref.astype(np.float64) - lq).ravel()
    dd, ee = float(d @ d), float(e @ e)
    change = float(np.sqrt(dd / d.size))
    if dd / d.size < MIN_CHANGE:
        return FaceCheck(strength=1.0, agreement=0.0, change=change)
    de = float(d @ e)
    agreement = de / np.sqrt(dd * ee) if ee > 0 else 0.0
    return FaceCheck(strength=float(np.clip(de / dd, 0.0, 1.0)), agreement=float(agreement), change=change)


def apply_strength(source: np.ndarray, restored: np.ndarray, strength: float, rows: int = 512) -> np.ndarray:
    """``source + strength * (restored - source)``, same dtype as ``restored``; row strips, so a 50 MP photo
    needs a strip of float32, not the whole photo. ``strength >= 1`` returns ``restored`` itself."""
    if source.shape != restored.shape or source.dtype != restored.dtype:
        raise ValueError(f"apply_strength: source {source.dtype} {source.shape} and restored {restored.dtype} "
                         f"{restored.shape} differ")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if strength >= 1.0:
        return restored
    top = 65535.0 if restored.dtype == np.uint16 else 255.0
    out = np.empty_like(restored)
    for y in range(0, restored.shape[0], rows):
        s = source[y:y + rows].astype(np.float32)
        r = restored[y:y + rows].astype(np.float32)
        out[y:y + rows] = np.clip(s + strength * (r - s) + 0.5, 0.0, top).astype(restored.dtype)
    return out


__all__ = ["FaceCheck", "MIN_CHANGE", "apply_strength", "face_check"]
