"""ComfyUI model folders of the pack, and resolving the files users pick in them.

Folders (``folder_paths`` names):

* ``face2scene`` (new, ``models/face2scene``): Face2Scene restorer adapters (``.safetensors``).
* ``facerestore_models`` (shared with other face-restoration packs, ``models/facerestore_models``):
  GFPGAN / RestoreFormer / CodeFormer... files loaded through spandrel.
* ``checkpoints`` (ComfyUI's own): the SD-Turbo checkpoint users already have.
* ``insightface`` (shared with ReActor / InstantID..., ``models/insightface``): insightface model packs
  for the optional insightface face detector.

:func:`register_model_folders` is the only thing the pack does when ComfyUI imports it (the documented
way for packs to add model folders). Outside ComfyUI ``folder_paths`` does not exist and nothing happens.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..face2scene_core.errors import WeightsNotFoundError

log = logging.getLogger(__name__)

NONE_CHOICE = "(none)"
"""First entry of a model-file combo: no file chosen (combos must never be empty)."""
EMBEDDED_CHOICE = "(embedded)"
"""First entry of the adapter combo: the adapter shipped inside the package."""

FACE2SCENE_FOLDER = "face2scene"
FACERESTORE_FOLDER = "facerestore_models"
CHECKPOINTS_FOLDER = "checkpoints"
INSIGHTFACE_FOLDER = "insightface"

_PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def _folder_paths():
    """ComfyUI's ``folder_paths`` module, or ``None`` outside ComfyUI."""
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths


def _register(fp, name: str, extensions: set[str]) -> None:
    """Add ``models/<name>`` to folder ``name`` (creating the entry if needed) and make sure the
    extension filter lets ``extensions`` through. Paths other packs or extra_model_paths.yaml registered
    are kept; an empty filter (ComfyUI: "every file") is left as it is."""
    default = os.path.join(fp.models_dir, name)
    if name in fp.folder_names_and_paths:
        paths, exts = fp.folder_names_and_paths[name]
        if default not in paths:
            paths.append(default)
        if exts:
            fp.folder_names_and_paths[name] = (paths, set(exts) | extensions)
    else:
        fp.folder_names_and_paths[name] = ([default], set(extensions))


def register_model_folders() -> bool:
    """Register the pack's model folders with ComfyUI. Returns ``False`` outside ComfyUI."""
    fp = _folder_paths()
    if fp is None:
        return False
    _register(fp, FACE2SCENE_FOLDER, {".safetensors"})
    _register(fp, FACERESTORE_FOLDER, set(fp.supported_pt_extensions))
    if INSIGHTFACE_FOLDER not in fp.folder_names_and_paths:
        _register(fp, INSIGHTFACE_FOLDER, set())
    return True


def folder_list(name: str) -> list[str]:
    """Files of ComfyUI folder ``name`` (relative names, as ComfyUI lists them); ``[]`` outside ComfyUI."""
    fp = _folder_paths()
    if fp is None or name not in fp.folder_names_and_paths:
        return []
    return list(fp.get_filename_list(name))


def searched_folders(name: str) -> list[str]:
    """The folders ComfyUI searches for ``name`` (for error messages)."""
    fp = _folder_paths()
    if fp is None or name not in fp.folder_names_and_paths:
        return []
    return list(fp.get_folder_paths(name))


def _where(name: str) -> str:
    folders = searched_folders(name)
    return ", ".join(f"'{f}'" for f in folders) if folders else f"(no '{name}' folder is registered)"


def resolve_model_file(name: str, filename: str, what: str) -> Path:
    """Full path of ``filename`` picked from ComfyUI folder ``name``.

    Raises:
        WeightsNotFoundError: nothing picked, or the file is in none of the folders; the message lists
            the folders searched and what to put there.
    """
    if not isinstance(filename, str):
        raise ValueError(f"{what}: expected a file name, got {type(filename).__name__}")
    if filename in ("", NONE_CHOICE, EMBEDDED_CHOICE):
        raise WeightsNotFoundError(
            f"No {what} was chosen. Put the file in one of the '{name}' folders ({_where(name)}), "
            "refresh ComfyUI (press R) and pick it in the node."
        )
    fp = _folder_paths()
    full = fp.get_full_path(name, filename) if fp is not None else None
    if full is None or not os.path.isfile(full):
        raise WeightsNotFoundError(
            f"{what} '{filename}' not found. Folders searched: {_where(name)}. Put the file in one of them "
            "(or add a folder in extra_model_paths.yaml), refresh ComfyUI (press R) and pick it again."
        )
    return Path(full)


def is_pickle(path: Path) -> bool:
    """Whether ``path`` is a pickle-based weight file (never loaded by this pack)."""
    return path.suffix.lower() in _PICKLE_SUFFIXES


def insightface_model_dir() -> Path:
    """The first registered ``insightface`` folder that holds a face-detection ONNX model.

    Raises:
        WeightsNotFoundError: listing the folders searched.
    """
    from ..face2scene_core.faces.detect import INSIGHTFACE_DETECTOR_FILES
    from ..face2scene_core.faces.model_files import find_model_file

    for folder in searched_folders(INSIGHTFACE_FOLDER):
        path = Path(folder)
        if path.is_dir() and find_model_file(path, INSIGHTFACE_DETECTOR_FILES, ("scrfd*.onnx", "det_*.onnx")):
            return path
    raise WeightsNotFoundError(
        f"The insightface detector needs an insightface model pack (e.g. buffalo_l with det_10g.onnx). "
        f"Folders searched: {_where(INSIGHTFACE_FOLDER)}. Put the pack there "
        "(models/insightface/models/buffalo_l/...), "
        "or choose the retinaface detector (shipped, offline)."
    )


__all__ = [
    "CHECKPOINTS_FOLDER",
    "EMBEDDED_CHOICE",
    "FACE2SCENE_FOLDER",
    "FACERESTORE_FOLDER",
    "INSIGHTFACE_FOLDER",
    "NONE_CHOICE",
    "folder_list",
    "insightface_model_dir",
    "is_pickle",
    "register_model_folders",
    "resolve_model_file",
    "searched_folders",
]
