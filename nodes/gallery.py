"""Face2Scene Load Gallery / Save Gallery: a folder of photos in, restored photos out under their own names."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from ..face2scene_core.errors import InputImageError
from .images import to_arrays, to_image
from .types import CATEGORY, FILES

log = logging.getLogger(__name__)

LOAD_MODES = ("one by one", "batch", "batch (pad to largest)")
FORMATS = ("png", "jpg", "webp")


def _comfy_dir(kind: str) -> Path | None:
    try:
        import folder_paths
    except ImportError:
        return None
    return Path(folder_paths.get_input_directory() if kind == "input" else folder_paths.get_output_directory())


def resolve_folder(folder: str, kind: str) -> Path:
    """An absolute folder as given, or a relative one under ComfyUI's input (``kind="input"``) or output folder."""
    if not isinstance(folder, str) or not folder.strip():
        raise ValueError(f"folder must be a non-empty path, got {folder!r}")
    path = Path(folder.strip()).expanduser()
    base = _comfy_dir(kind)
    return path if path.is_absolute() or base is None else base / path


def _progress(total: int):
    """ComfyUI's progress bar for this node (``None`` outside ComfyUI)."""
    try:
        from comfy.utils import ProgressBar
    except ImportError:
        return None
    return ProgressBar(total)


def load_gallery(folder: Path, limit: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Every readable image directly in ``folder`` (sorted by name; ``limit`` > 0 keeps the first ``limit``),
    upright (EXIF orientation applied). An unreadable file is skipped with a warning naming it and why;
    :func:`load_gallery_report` also returns the skipped files."""
    images, names, _ = load_gallery_report(folder, limit)
    return images, names


def load_gallery_report(folder: Path, limit: int = 0) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Like :func:`load_gallery`, plus ``"name: reason"`` for every file skipped as unreadable."""
    from ..face2scene_core.imageio import list_images, load_photo

    if not folder.is_dir():
        raise InputImageError(f"gallery folder '{folder}' does not exist. Give an absolute path, or a folder inside "
                              f"ComfyUI's input folder ({_comfy_dir('input')}).")
    files = list_images(folder)
    if limit > 0:
        files = files[:limit]
    if not files:
        raise InputImageError(f"no images (.png, .jpg, .webp...) in gallery folder '{folder}'.")
    images, names, skipped = [], [], []
    bar = _progress(len(files))
    for f in files:
        try:
            images.append(load_photo(f).rgb)
            names.append(f.name)
        except InputImageError as exc:
            skipped.append(f"{f.name}: {exc}")
            log.warning("Face2Scene Load Gallery: skipping unreadable file %s", skipped[-1])
        if bar is not None:
            bar.update(1)
    if not images:
        raise InputImageError(f"none of the {len(files)} image file(s) in '{folder}' could be read: "
                              + "; ".join(skipped))
    if skipped:
        log.warning("Face2Scene Load Gallery: %d of %d file(s) skipped as unreadable in '%s'", len(skipped),
                    len(files), folder)
    return images, names, skipped


def gallery_report(folder: Path, names: list[str], skipped: list[str]) -> str:
    """The Load Gallery node's ``report`` output: JSON naming the loaded files and each skipped one with its reason."""
    rows = [dict(zip(("file", "reason"), s.split(": ", 1))) for s in skipped]
    return json.dumps({"folder": str(folder), "loaded": len(names), "files": names, "skipped": rows}, indent=1)


def pad_to_largest(images: list[np.ndarray]) -> list[np.ndarray]:
    """Pad every image (bottom/right, black) to the largest height and width."""
    h, w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    return [np.pad(i, ((0, h - i.shape[0]), (0, w - i.shape[1]), (0, 0))) for i in images]


def gallery_outputs(images: list[np.ndarray], names: list[str], mode: str):
    """``(IMAGE list, names list)`` as the node returns them (both lists: OUTPUT_IS_LIST)."""
    if mode not in LOAD_MODES:
        raise ValueError(f"mode must be one of {LOAD_MODES}, got {mode!r}")
    if mode == "one by one":
        return [to_image([i]) for i in images], names
    sizes = sorted({f"{i.shape[1]}x{i.shape[0]}" for i in images})
    if mode == "batch" and len(sizes) > 1:
        listing = ", ".join(f"{n} {i.shape[1]}x{i.shape[0]}" for n, i in zip(names, images))
        raise InputImageError(f"An IMAGE batch needs images of one size, but the gallery has {len(sizes)} sizes "
                              f"({listing}). Use mode 'one by one' (each photo restored at its own size), or "
                              "'batch (pad to largest)' for reference photos.")
    if mode == "batch (pad to largest)":
        images = pad_to_largest(images)
    return [to_image(images)], ["\n".join(names)]


def _stem(name: str) -> str:
    stem = Path(name.replace("\\", "/")).stem.strip()
    stem = re.sub(r"[^\w.\- ]+", "_", stem)
    return stem.lstrip(".") or "image"


def save_gallery(arrays: list[np.ndarray], names: list[str], folder: Path, fmt: str = "png") -> list[Path]:
    """Save each image as ``<folder>/<original stem>.<fmt>``; an existing file is never overwritten
    (``name_1.png``, ``name_2.png``... instead). Writes are atomic."""
    from ..face2scene_core.imageio import safe_output_path, save_image

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if len(names) != len(arrays):
        raise ValueError(f"got {len(names)} name(s) for {len(arrays)} image(s); connect the names output of the "
                         "Face2Scene Load Gallery node that loaded these images")
    folder.mkdir(parents=True, exist_ok=True)
    return [save_image(safe_output_path(folder / f"{_stem(n)}.{fmt}"), a) for a, n in zip(arrays, names)]


class Face2SceneLoadGallery:
    DESCRIPTION = ("Loads every image of a folder, upright, with its file name; unreadable files are skipped with a "
                   "warning naming each in the 'report' output (connect Face2Scene Show Report) and the console. "
                   "'one by one': each photo goes through the "
                   "graph on its own, at its own size. 'batch': one IMAGE batch (all photos the same size). "
                   "'batch (pad to largest)': for reference photos of different sizes.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING", "INT", "STRING", FILES)
    RETURN_NAMES = ("images", "names", "count", "report", "files")
    OUTPUT_IS_LIST = (True, True, False, False, False)
    OUTPUT_TOOLTIPS = ("The photos (a list one by one, or one batch).", "Their file names (one per line in a batch).",
                       "How many photos were loaded.",
                       "JSON: the folder, the files loaded and every file skipped with its reason.",
                       "All the file names, in load order: connect to 'reference_files' of the node that takes these "
                       "photos as references, so a reference without a face is named by its file.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "folder": ("STRING", {"default": "gallery", "tooltip": "Absolute path, or a folder inside ComfyUI's "
                       "input folder."}),
            "mode": (list(LOAD_MODES), {"default": "one by one", "tooltip": "one by one: each photo at its own "
                     "size. batch: one IMAGE batch (same sizes). batch (pad to largest): for references."}),
            "limit": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Load at most this many (0 = all)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, folder, mode, limit):
        # re-run when the folder's content changes (names, sizes, times), not only when the inputs do
        path = resolve_folder(folder, "input")
        if not path.is_dir():
            return "missing"
        return str(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()))

    def load(self, folder, mode, limit):
        path = resolve_folder(folder, "input")
        images, names, skipped = load_gallery_report(path, limit)
        out_images, out_names = gallery_outputs(images, names, mode)
        return (out_images, out_names, len(images), gallery_report(path, names, skipped), list(names))


class Face2SceneSaveGallery:
    DESCRIPTION = ("Saves restored photos under their original names (from Face2Scene Load Gallery) into a folder, "
                   "never overwriting a file: an existing name gets _1, _2...")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("paths",)
    OUTPUT_TOOLTIPS = ("The files written, one per line.",)
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Restored photos."}),
                "output_folder": ("STRING", {"default": "face2scene", "tooltip": "Absolute path, or a folder inside "
                                  "ComfyUI's output folder."}),
                "format": (list(FORMATS), {"default": "png", "tooltip": "png is lossless."}),
            },
            "optional": {"names": ("STRING", {"forceInput": True, "tooltip": "Original file names (one per line); "
                                              "without them the files are named restored_0, restored_1..."})},
        }

    def save(self, images, output_folder, format, names=None):
        arrays = to_arrays(images)
        names = names.splitlines() if names else [f"restored_{i}" for i in range(len(arrays))]
        paths = save_gallery(arrays, names, resolve_folder(output_folder, "output"), format)
        out_dir = _comfy_dir("output")
        ui = [{"filename": p.name, "subfolder": os.path.relpath(p.parent, out_dir), "type": "output"}
              for p in paths if out_dir is not None and p.resolve().is_relative_to(out_dir.resolve())]
        for item in ui:
            item["subfolder"] = "" if item["subfolder"] == "." else item["subfolder"]
        return {"ui": {"images": ui}, "result": ("\n".join(str(p) for p in paths),)}


__all__ = ["FORMATS", "LOAD_MODES", "Face2SceneLoadGallery", "Face2SceneSaveGallery", "gallery_outputs", "gallery_report",
           "load_gallery", "load_gallery_report", "pad_to_largest", "resolve_folder", "save_gallery"]
