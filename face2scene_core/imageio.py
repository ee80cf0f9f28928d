"""Reading and writing images without ever losing data.

Conventions used across the package:

* an *image array* is ``numpy.uint8`` of shape ``(H, W, 3)`` in RGB order;
* a *float image* is ``numpy.float32`` ``(H, W, 3)`` in ``[0, 1]``;
* a *tensor image* is ``torch.float32`` ``(B, 3, H, W)`` in ``[0, 1]``.

Writes are atomic (temporary file in the destination folder, then ``os.replace``), and
:func:`safe_output_path` never returns a path that already exists, so originals are never
overwritten.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Load any image Pillow can decode as an RGB ``uint8`` array ``(H, W, 3)``.

    Grey, palette and RGBA images are converted to RGB (alpha is dropped).
    Raises :class:`InputImageError` for a missing path, a folder, or a file that is not an image.
    """
    p = Path(path)
    if not p.exists():
        raise InputImageError(f"Image not found: '{p}'. Check the path (it is relative to '{Path.cwd()}').")
    if p.is_dir():
        raise InputImageError(f"'{p}' is a folder, not an image. Pass an image file, or use the folder/batch mode.")
    try:
        with Image.open(p) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputImageError(
            f"'{p}' is not an image Pillow can read ({exc}). Supported: {', '.join(IMAGE_SUFFIXES)}."
        ) from exc
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputImageError(f"'{p}' decoded to an empty image of shape {arr.shape}.")
    return np.ascontiguousarray(arr)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _finish(tmp: str, dest: Path) -> None:
    """Give the temporary file normal permissions (mkstemp makes it 0600) and move it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, dest)


def save_image(path: str | os.PathLike, image: np.ndarray, *, quality: int = 95) -> Path:
    """Write an RGB ``uint8`` image atomically; the format follows the suffix (PNG if none known).

    The file appears complete or not at all: it is written to a temporary file in the same
    folder and moved into place with :func:`os.replace`.
    """
    p = Path(path)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        else:
            raise ValueError(f"save_image expects uint8 or float in [0,1], got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"save_image expects an (H, W, 3) RGB array, got shape {arr.shape}")
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, "PNG")
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(arr, "RGB").save(fh, format=fmt, **kwargs)
        _finish(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes (JSON reports, checkpoints) atomically, like :func:`save_image`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        _finish(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def safe_output_path(path: str | os.PathLike) -> Path:
    """Return ``path`` if nothing is there yet, else ``name_1.ext``, ``name_2.ext``... (first free)."""
    p = Path(path)
    if not p.exists():
        return p
    i = 1
    while True:
        cand = p.with_name(f"{p.stem}_{i}{p.suffix}")
        if not cand.exists():
            return cand
        i += 1


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), sorted by name."""
    d = Path(folder)
    if not d.is_dir():
        raise InputImageError(f"Folder not found: '{d}'.")
    return sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def to_float(image: np.ndarray) -> np.ndarray:
    """``uint8`` image to ``float32`` in ``[0, 1]``."""
    return image.astype(np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``float`` image in ``[0, 1]`` to ``uint8`` (rounded, clipped)."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
