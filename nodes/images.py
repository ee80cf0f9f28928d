"""ComfyUI IMAGE / MASK tensors <-> the core's arrays, and the preview images the nodes show.

ComfyUI: IMAGE is ``float32 [B, H, W, C]`` in ``[0, 1]`` (C = 3), MASK is ``float32 [B, H, W]``.
Core: image arrays ``uint8 (H, W, 3)`` RGB, tensor images ``float32 (B, 3, H, W)`` in ``[0, 1]``.
"""

from __future__ import annotations

import textwrap

import cv2
import numpy as np
import torch

from ..face2scene_core.errors import InputImageError

PANEL = 256
"""Side of each tile of the degradation preview."""


def check_image(image: torch.Tensor, what: str = "image") -> torch.Tensor:
    """Validate a ComfyUI IMAGE ``[B, H, W, C]`` (C 1, 3 or 4); returns it as float32 RGB ``[B, H, W, 3]``."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{what} must be a ComfyUI IMAGE [B, H, W, 3], got {shape}")
    if image.shape[0] < 1 or min(image.shape[1:3]) < 1:
        raise InputImageError(f"{what} is empty: shape {tuple(image.shape)}")
    image = image.float()
    if image.shape[-1] == 1:
        return image.expand(-1, -1, -1, 3)
    return image[..., :3]


def to_arrays(image: torch.Tensor, what: str = "image") -> list[np.ndarray]:
    """IMAGE ``[B, H, W, C]`` -> ``B`` arrays ``uint8 (H, W, 3)``."""
    rgb = check_image(image, what).clamp(0, 1).cpu().numpy()
    return [np.ascontiguousarray((x * 255.0 + 0.5).astype(np.uint8)) for x in rgb]


def to_image(arrays: list[np.ndarray]) -> torch.Tensor:
    """Arrays ``uint8 (H, W, 3)`` (all the same size) -> IMAGE ``float32 [B, H, W, 3]``."""
    if not arrays:
        raise ValueError("to_image needs at least one array")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images of one IMAGE batch must have the same size, got {sorted(shapes)}")
    return torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0)


def to_chw(image: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[B, H, W, 3]`` -> tensor image ``(B, 3, H, W)`` float32 (no quantisation)."""
    return check_image(image).permute(0, 3, 1, 2).contiguous()


def from_chw(tensor: torch.Tensor) -> torch.Tensor:
    """Tensor image ``(B, 3, H, W)`` -> IMAGE ``float32 [B, H, W, 3]`` on the CPU, clamped to ``[0, 1]``."""
    return tensor.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().contiguous()


def grey(h: int, w: int, value: int = 128) -> np.ndarray:
    """A flat ``uint8 (h, w, 3)`` image (placeholder for images without a face)."""
    return np.full((h, w, 3), value, dtype=np.uint8)


def put_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color=(255, 255, 255)) -> None:
    """Text on a dark box (readable on any background), in place; ``org`` is the baseline start."""
    thick = max(1, int(round(scale * 1.6)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = org
    x0, y0, x1, y1 = max(x - 2, 0), max(y - th - 3, 0), min(x + tw + 2, img.shape[1]), min(y + base + 1, img.shape[0])
    img[y0:y1, x0:x1] = (img[y0:y1, x0:x1].astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def annotate_faces(entry) -> np.ndarray:
    """The photo with every detected face: chosen in green, other usable faces in orange, too small in grey,
    with its index and 5 landmarks, and the reason for the choice written at the top."""
    img = entry.photo.copy()
    h, w = img.shape[:2]
    scale = max(0.45, min(h, w) / 800.0)
    thick = max(1, int(round(min(h, w) / 300)))
    for i, face in enumerate(entry.faces):
        color = (40, 220, 40) if i == entry.chosen else (255, 160, 0) if i in entry.usable else (150, 150, 150)
        x1, y1, x2, y2 = (int(round(v)) for v in face.bbox)
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thick)
        for x, y in face.landmarks:
            cv2.circle(img, (int(round(x)), int(round(y))), thick + 1, color, -1)
        put_text(img, str(i), (x1 + 2, max(y1 - 4, 12)), scale, color)
    lines = textwrap.wrap(entry.reason, width=max(20, int(w / (20 * scale))))[:6]
    step = int(30 * scale)
    top = text_top(h, len(lines) * step + step // 2, entry.faces[entry.chosen].bbox if entry.chosen is not None else None)
    for k, line in enumerate(lines):
        put_text(img, line, (6, top + step * (k + 1)), scale)
    return img


def text_top(h: int, block: int, box) -> int:
    """Top row of a text block of ``block`` rows in an image ``h`` rows high: the top of the image, or the bottom
    when the chosen face's ``box`` (x1, y1, x2, y2) overlaps the top block less there (the text never hides the
    face when there is room above or below it)."""
    if box is None:
        return 0
    y1, y2 = float(box[1]), float(box[3])
    over_top = max(0.0, min(y2, block) - max(y1, 0))
    over_bottom = max(0.0, min(y2, h) - max(y1, h - block))
    return 0 if over_top <= over_bottom else max(0, h - block)


def _tile(img: np.ndarray) -> np.ndarray:
    interp = cv2.INTER_AREA if max(img.shape[:2]) > PANEL else cv2.INTER_NEAREST
    return cv2.resize(img, (PANEL, PANEL), interpolation=interp)


def features_rgb(features: torch.Tensor) -> np.ndarray:
    """FaDeX features ``(1, C, h, w)`` -> ``uint8 (h, w, 3)``: the 3 principal components as RGB."""
    f = features[0].float().flatten(1).T  # h*w, c
    f = f - f.mean(0, keepdim=True)
    q = min(3, f.shape[0], f.shape[1])
    _, _, v = torch.linalg.svd(f, full_matrices=False)
    proj = f @ v[:q].T  # h*w, q
    lo, hi = proj.quantile(0.01, dim=0), proj.quantile(0.99, dim=0)
    proj = ((proj - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    if q < 3:
        proj = torch.cat([proj, proj[:, :1].expand(-1, 3 - q)], dim=1)
    h, w = features.shape[-2:]
    return (proj.reshape(h, w, 3).numpy() * 255 + 0.5).astype(np.uint8)


def embedding_strip(embedding: np.ndarray, width: int, height: int = 24) -> np.ndarray:
    """The degradation embedding as a colour strip (one column per dimension: blue negative, red positive)."""
    e = np.asarray(embedding, dtype=np.float32)
    e = e / max(float(np.abs(e).max()), 1e-6)
    cols = np.zeros((1, len(e), 3), dtype=np.float32)
    cols[0, :, 0] = np.clip(e, 0, 1)
    cols[0, :, 2] = np.clip(-e, 0, 1)
    cols[0, :, 1] = 1.0 - np.abs(e)
    strip = (cols * 255 + 0.5).astype(np.uint8)
    return cv2.resize(strip, (width, height), interpolation=cv2.INTER_NEAREST)


ESTIMATE_BAND = 112
"""Height of the band under the degradation preview where the estimated numbers are written."""


def estimate_band(estimate: dict | None, width: int) -> np.ndarray:
    """The estimated degradation as large text lines on a dark band (``uint8 (ESTIMATE_BAND, width, 3)``)."""
    from ..face2scene_core.fadex.estimate import describe

    band = grey(ESTIMATE_BAND, width, 24)
    text = describe(estimate) if estimate else "no estimate"
    for k, line in enumerate(textwrap.wrap(text.replace(", ", " | "), 44)[:4]):
        put_text(band, line, (8, 24 + 26 * k), 0.62)
    return band


def degradation_panel(entry) -> np.ndarray:
    """Preview of one FaDeX estimate, square so that it stays legible at node size: ``LQ face | Ref-FR face`` over
    ``|LQ - HQ| x4 | features (PCA)``, large labels, the embedding strip and the estimated numbers below;
    ``uint8 (2 * PANEL + 24 + ESTIMATE_BAND, 2 * PANEL, 3)``."""
    w = 2 * PANEL
    if entry.features is None:
        panel = grey(2 * PANEL + 24 + ESTIMATE_BAND, w, 64)
        for k, line in enumerate(textwrap.wrap(entry.note or "no face: restored without degradation tokens", 28)[:8]):
            put_text(panel, line, (12, 60 + 40 * k), 0.9)
        return panel
    diff = np.clip(np.abs(entry.lq_crop.astype(np.int16) - entry.hq_crop.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
    tiles = [_tile(entry.lq_crop), _tile(entry.hq_crop), _tile(diff), _tile(features_rgb(entry.features))]
    for tile, label in zip(tiles, ("LQ face", "Ref-FR face", "|LQ-HQ| x4", "FaDeX features")):
        put_text(tile, label, (8, 30), 0.85)
    grid = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    return np.concatenate([grid, embedding_strip(entry.embedding, w), estimate_band(entry.estimate, w)], axis=0)


__all__ = ["ESTIMATE_BAND", "PANEL", "annotate_faces", "estimate_band", "check_image", "degradation_panel", "embedding_strip", "features_rgb",
           "from_chw", "grey", "put_text", "text_top", "to_arrays", "to_chw", "to_image"]
