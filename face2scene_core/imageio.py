"""Reading and writing images without ever losing data.

Conventions used across the package:

* an *image array* is ``numpy.uint8`` of shape ``(H, W, 3)`` in RGB order;
* a *float image* is ``numpy.float32`` ``(H, W, 3)`` in ``[0, 1]``;
* a *tensor image* is ``torch.float32`` ``(B, 3, H, W)`` in ``[0, 1]``.

Photos are read with their EXIF orientation applied (a sideways phone photo comes out upright). A
:class:`Photo` keeps what a restored copy needs to look like its original: 16-bit depth, greyscale, alpha,
EXIF (orientation reset) and the ICC profile; :func:`save_photo` writes them back where the format allows
and says what it could not keep.

Writes are atomic (temporary file ``.<name>.<random>.tmp`` in the destination folder, then moved into
place), :func:`safe_output_path` never returns a path that already exists, and :func:`claim_file` links a
finished temporary file to a free name in one step, so two writers never get the same name and an original
is never overwritten.
"""

from __future__ import annotations

import os
import re
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
FORMAT_OF_SUFFIX = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                    ".tif": "TIFF", ".tiff": "TIFF"}
# formats that store each piece of metadata (Pillow 13 writers)
_EXIF_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF")
_ICC_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF")
_ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")
_DEEP_FORMATS = ("PNG", "TIFF")
# our temporary files: ".<name>.<8 random characters>.tmp" (tempfile.mkstemp)
TEMP_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
ORIENTATION_TAG = 0x0112


@dataclass
class Photo:
    """A photo as read from disk, upright, with what is needed to write a faithful restored copy.

    ``rgb``: ``uint8 (H, W, 3)`` (greyscale replicated; 16-bit rounded), what face detection sees.
    ``deep``: ``uint16 (H, W, 3)`` for 16-bit files, else ``None`` (the restorer then works from it).
    ``alpha``: ``(H, W)`` ``uint8`` / ``uint16`` transparency, carried over unchanged; ``None`` if opaque.
    ``grey``: the file is greyscale (the restored copy is written greyscale too).
    ``format``: Pillow's format name (``"PNG"``, ``"JPEG"``...). ``exif``: EXIF bytes with the orientation
    reset to 1 (the pixels are upright). ``icc``: ICC profile bytes, only when it describes these pixels
    (an RGB or grey profile). ``dpi``: ``(x, y)`` or ``None``. ``notes``: what was changed on reading.
    """

    rgb: np.ndarray
    deep: np.ndarray | None = None
    alpha: np.ndarray | None = None
    grey: bool = False
    format: str = "PNG"
    exif: bytes | None = None
    icc: bytes | None = None
    dpi: tuple | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bits(self) -> int:
        return 16 if self.deep is not None else 8

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``(H, W[, C])`` array, as ``PIL.ImageOps.exif_transpose`` does."""
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(int(orientation))
    return arr if op is None else np.ascontiguousarray(op(arr))


def _icc_space(icc: bytes | None) -> str | None:
    """The colour space an ICC profile describes (``"RGB"``, ``"GRAY"``, ``"CMYK"``...), from its header."""
    if not icc or len(icc) < 20:
        return None
    return icc[16:20].decode("ascii", "replace").strip()


def _is_deep(im: Image.Image) -> bool:
    """True for 16-bit-per-channel RGB(A) files, which Pillow would silently cut to 8 bits."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return False
    raw = im.tile[0][3]
    raw = raw[0] if isinstance(raw, tuple) else raw
    return isinstance(raw, str) and ";16" in raw


def _read_deep(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit RGB(A) through OpenCV: ``(uint16 (H, W, 3), uint16 (H, W) alpha or None)``, not yet oriented."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.ndim != 3 or arr.dtype != np.uint16:
        raise OSError("cannot decode the 16-bit pixels")
    rgb = np.ascontiguousarray(arr[..., 2::-1])
    alpha = np.ascontiguousarray(arr[..., 3]) if arr.shape[2] == 4 else None
    return rgb, alpha


def _to8(a: np.ndarray) -> np.ndarray:
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _decode(p: Path, im: Image.Image, deep_file: bool, notes: list[str]):
    """``(rgb8, deep16, alpha, grey)`` before orientation."""
    mode = im.mode
    if deep_file:
        deep, alpha = _read_deep(p)
        return _to8(deep), deep, alpha, False
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        g = np.asarray(im)
        if mode == "I" and g.size and (g.min() < 0 or g.max() > 65535):
            notes.append("32-bit integer pixels clipped to 16 bits")
        g = np.clip(g, 0, 65535).astype(np.uint16)
        deep = np.repeat(g[..., None], 3, axis=2)
        return _to8(deep), deep, None, True
    if mode == "F":
        g = np.asarray(im, dtype=np.float32)
        scale = 1.0 if g.size and g.max() <= 1.0 else 255.0
        deep = (np.clip(g / scale, 0, 1) * 65535 + 0.5).astype(np.uint16)
        deep = np.repeat(deep[..., None], 3, axis=2)
        notes.append("floating-point pixels written back as 16-bit")
        return _to8(deep), deep, None, True
    if mode in ("1", "L", "LA", "La"):
        la = np.asarray(im.convert("LA"))
        rgb = np.repeat(la[..., :1], 3, axis=2)
        alpha = la[..., 1] if mode in ("LA", "La") else None
        return rgb, None, alpha, True
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info)
    arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    if has_alpha:
        return np.ascontiguousarray(arr[..., :3]), None, np.ascontiguousarray(arr[..., 3]), False
    return arr, None, None, False


def load_photo(path: str | os.PathLike) -> Photo:
    """Read a photo upright (EXIF orientation applied) with its depth, alpha, greyscale-ness and metadata.

    Raises :class:`InputImageError` for a missing path, a folder, or a file that is not a readable image.
    """
    p = Path(path)
    if not p.exists():
        raise InputImageError(f"Image not found: '{p}'. Check the path (it is relative to '{Path.cwd()}').")
    if p.is_dir():
        raise InputImageError(f"'{p}' is a folder, not an image. Pass an image file, or use the folder/batch mode.")
    notes: list[str] = []
    try:
        with Image.open(p) as im:
            deep_file = _is_deep(im)  # first: reading EXIF or pixels clears the tile descriptors
            fmt = im.format or FORMAT_OF_SUFFIX.get(p.suffix.lower(), "PNG")
            exif = im.getexif()
            orientation = int(exif.get(ORIENTATION_TAG, 1) or 1)
            icc = im.info.get("icc_profile")
            dpi = im.info.get("dpi")
            im.load()
            rgb, deep, alpha, grey = _decode(p, im, deep_file, notes)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputImageError(
            f"'{p}' is not an image Pillow can read ({exc}). Supported: {', '.join(IMAGE_SUFFIXES)}."
        ) from exc
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InputImageError(f"'{p}' decoded to an empty image of shape {rgb.shape}.")
    if orientation != 1:
        rgb, deep, alpha = (None if a is None else _orient(a, orientation) for a in (rgb, deep, alpha))
        notes.append(f"EXIF orientation {orientation} applied")
    exif_bytes = None
    if len(exif):
        if ORIENTATION_TAG in exif:
            exif[ORIENTATION_TAG] = 1
        exif_bytes = exif.tobytes()
    space = _icc_space(icc)
    if icc and space not in (("GRAY",) if grey else ("RGB",)):
        notes.append(f"ICC profile ({space}) not kept: it does not describe the {('grey' if grey else 'RGB')} pixels")
        icc = None
    return Photo(rgb=np.ascontiguousarray(rgb), deep=deep, alpha=alpha, grey=grey, format=fmt, exif=exif_bytes,
                 icc=icc, dpi=tuple(dpi) if dpi else None, notes=notes)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Load any image Pillow can decode as an upright RGB ``uint8`` array ``(H, W, 3)``.

    The EXIF orientation is applied; grey (8- and 16-bit), palette and RGBA images are converted to RGB
    (alpha is dropped; use :func:`load_photo` to keep it). Raises :class:`InputImageError` for a missing
    path, a folder, or a file that is not an image.
    """
    return load_photo(path).rgb


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _finish(tmp: str, dest: Path) -> None:
    """Give the temporary file normal permissions (mkstemp makes it 0600) and move it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, dest)


def _temp_for(p: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)


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
    fmt = FORMAT_OF_SUFFIX.get(p.suffix.lower(), "PNG")
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    fd, tmp = _temp_for(p)
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(arr, "RGB").save(fh, format=fmt, **kwargs)
        _finish(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


# ------------------------------------------------------------------------------------ faithful photo writing
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def _png_with_metadata(png: bytes, icc: bytes | None, exif: bytes | None, dpi: tuple | None) -> bytes:
    """Insert iCCP / eXIf / pHYs chunks right after IHDR of a PNG written without them (OpenCV)."""
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc))
    if dpi:
        ppm = [max(1, round(float(d) / 0.0254)) for d in dpi[:2]]
        extra += _png_chunk(b"pHYs", ppm[0].to_bytes(4, "big") + ppm[1].to_bytes(4, "big") + b"\x01")
    if exif:
        extra += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    end_ihdr = 8 + 4 + 4 + 13 + 4  # signature + IHDR (length, type, 13 bytes, crc)
    return png[:end_ihdr] + extra + png[end_ihdr:]


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma (as Pillow's ``convert("L")``), same dtype as ``rgb``."""
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    top = 65535 if rgb.dtype == np.uint16 else 255
    return np.clip(y + 0.5, 0, top).astype(rgb.dtype)


def _depth(a: np.ndarray, dtype) -> np.ndarray:
    if a.dtype == dtype:
        return a
    return (a.astype(np.uint16) * 257) if dtype == np.uint16 else _to8(a)


def encode_photo(image: np.ndarray, photo: Photo | None, fmt: str, *, quality: int = 95) -> tuple[bytes, list[str]]:
    """Encode a restored ``(H, W, 3)`` ``uint8``/``uint16`` image like ``photo`` (depth, grey, alpha, EXIF,
    ICC, dpi) in format ``fmt``; returns the file bytes and notes on what the format could not keep."""
    import io

    photo = photo or Photo(rgb=image)
    notes: list[str] = []
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an (H, W, 3) uint8 or uint16 image, got {arr.dtype} {arr.shape}")
    if arr.dtype == np.uint16 and fmt not in _DEEP_FORMATS:
        arr = _to8(arr)
        notes.append(f"written as 8-bit ({fmt} has no 16-bit)")
    alpha = photo.alpha
    if alpha is not None and alpha.shape != arr.shape[:2]:
        raise ValueError(f"alpha {alpha.shape} does not match the image {arr.shape[:2]}")
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        notes.append(f"alpha dropped ({fmt} has none)")
        alpha = None
    exif = photo.exif if fmt in _EXIF_FORMATS else None
    icc = photo.icc if fmt in _ICC_FORMATS else None
    if photo.exif and exif is None:
        notes.append(f"EXIF dropped ({fmt} has none)")
    if photo.icc and icc is None:
        notes.append(f"ICC profile dropped ({fmt} has none)")
    grey = photo.grey
    if arr.dtype == np.uint16 and (not grey or alpha is not None):
        import cv2  # Pillow has no 16-bit RGB(A) writer

        chans = [arr[..., 2], arr[..., 1], arr[..., 0]] if not grey else [_luma(arr)] * 3
        if grey:
            notes.append("16-bit grey with alpha written as 16-bit RGBA")
        if alpha is not None:
            chans.append(_depth(alpha, np.uint16))
        ok, buf = cv2.imencode(".png" if fmt == "PNG" else ".tiff", np.dstack(chans))
        if not ok:
            raise OSError(f"OpenCV could not encode a 16-bit {fmt}")
        data = buf.tobytes()
        if fmt == "PNG":
            return _png_with_metadata(data, icc, exif, photo.dpi), notes
        if exif or icc:
            notes.append("EXIF/ICC not kept in a 16-bit RGB TIFF")
        return data, notes
    if grey:
        px = _luma(arr)
        if alpha is not None:
            im = Image.fromarray(np.dstack([px, _depth(alpha, np.uint8)]), "LA")
        else:
            im = Image.fromarray(px)  # uint8 -> "L", uint16 -> "I;16"
    else:
        im = Image.fromarray(arr, "RGB") if alpha is None else Image.fromarray(
            np.dstack([arr, _depth(alpha, np.uint8)]), "RGBA")
    kwargs: dict = {}
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if exif:
        kwargs["exif"] = exif
    if icc:
        kwargs["icc_profile"] = icc
    if photo.dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        kwargs["dpi"] = photo.dpi
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate"
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue(), notes


def write_temp(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new temporary file ``.<name>.<random>.tmp`` in ``folder``, flushed to disk."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Path(tmp)


def link_exclusive(tmp: Path, dest: Path) -> bool:
    """Move the finished temporary file ``tmp`` to ``dest`` only if ``dest`` does not exist (atomic).

    Returns ``False`` (``tmp`` left in place) when ``dest`` exists. Uses a hard link; on file systems
    without hard links an exclusive create reserves the name before the atomic replace.
    """
    try:
        os.link(tmp, dest)
    except FileExistsError:
        return False
    except OSError:
        try:
            fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        os.close(fd)
        os.replace(tmp, dest)
        return True
    os.unlink(tmp)
    return True


def candidate_names(dest: Path) -> Iterable[Path]:
    """``dest``, then ``name_1.ext``, ``name_2.ext``... (endless)."""
    yield dest
    i = 1
    while True:
        yield dest.with_name(f"{dest.stem}_{i}{dest.suffix}")
        i += 1


def claim_file(dest: Path, data: bytes) -> Path:
    """Write ``data`` atomically to the first free name among :func:`candidate_names` and return it.

    The name is claimed in the same step as the file appears (exclusive hard link), so two processes
    writing the same name both succeed under different names and nothing is ever overwritten.
    """
    tmp = write_temp(dest.parent, dest.name, data)
    try:
        for cand in candidate_names(dest):
            if link_exclusive(tmp, cand):
                return cand
    finally:
        if tmp.exists():
            tmp.unlink()
    raise AssertionError("unreachable")  # pragma: no cover


def save_photo(path: str | os.PathLike, image: np.ndarray, photo: Photo | None = None, *,
               quality: int = 95) -> tuple[Path, list[str]]:
    """Write a restored image like ``photo`` (see :func:`encode_photo`) to ``path`` or, if that name is
    taken, ``name_1.ext``...; atomic and never overwriting. Returns ``(path written, notes)``."""
    p = Path(path)
    data, notes = encode_photo(image, photo, FORMAT_OF_SUFFIX.get(p.suffix.lower(), "PNG"), quality=quality)
    return claim_file(p, data), notes


def clean_stale_temps(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Delete temporary files this package left behind (``.<name>.<8 chars>.tmp``) after a killed run.

    Call it only while no other run writes into ``folder`` (the batch runner holds the folder's lock).
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    walker = os.walk(root) if recursive else [(str(root), [], [f.name for f in root.iterdir()])]
    for dirpath, _, names in walker:
        for n in names:
            if TEMP_PATTERN.match(n):
                f = Path(dirpath) / n
                try:
                    if f.is_file() and not f.is_symlink():
                        f.unlink()
                        removed.append(f)
                except OSError:
                    pass
    return removed


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes (JSON reports, checkpoints) atomically, like :func:`save_image`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_for(p)
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
    """Return ``path`` if nothing is there yet, else ``name_1.ext``, ``name_2.ext``... (first free).

    A check, not a claim: another process can take the name before you write. To write without a race,
    use :func:`claim_file` / :func:`save_photo`.
    """
    for cand in candidate_names(Path(path)):
        if not cand.exists():
            return cand
    raise AssertionError("unreachable")  # pragma: no cover


def list_images(folder: str | os.PathLike, *, recursive: bool = False,
                exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Image files (by suffix) in ``folder``, sorted by path.

    ``recursive``: also every subfolder (symbolic links to folders are followed once: loops are cut),
    except hidden ones (``.name``) and the folders in ``exclude`` (e.g. the output folder inside the input).
    """
    d = Path(folder)
    if not d.is_dir():
        raise InputImageError(f"Folder not found: '{d}'.")
    if not recursive:
        return sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    skip = {os.path.realpath(e) for e in exclude}
    seen: set[tuple[int, int]] = set()
    found = []
    for dirpath, dirnames, filenames in os.walk(d, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen or os.path.realpath(dirpath) in skip:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        for n in filenames:
            f = Path(dirpath) / n
            if f.suffix.lower() in IMAGE_SUFFIXES and not n.startswith(".") and f.is_file():
                found.append(f)
    return sorted(found, key=lambda f: f.relative_to(d).parts)


def to_float(image: np.ndarray) -> np.ndarray:
    """``uint8`` image to ``float32`` in ``[0, 1]``."""
    return image.astype(np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``float`` image in ``[0, 1]`` to ``uint8`` (rounded, clipped)."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
