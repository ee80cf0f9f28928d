"""Face2Scene Ref-FR: restore the aligned faces (embedded Ref-FR, a spandrel face model, or faces from any node)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..face2scene_core.errors import ArchitectureMismatchError, MissingBackboneError
from . import folders
from .images import grey, to_arrays, to_image
from .model import loaded, new_patcher
from .types import CATEGORY, FACES, Faces

log = logging.getLogger(__name__)

BACKENDS = ("embedded", "model file", "restored faces input")


def load_face_model(path: Path):
    """A face-restoration model file (GFPGAN, RestoreFormer, CodeFormer...) through spandrel -> descriptor.

    Only ``.safetensors`` files are read (pickles can run code). Raises ArchitectureMismatchError when the
    file is not a face-restoration model spandrel knows.
    """
    if folders.is_pickle(path):
        raise ArchitectureMismatchError(
            f"'{path.name}' is a pickle file ({path.suffix}); Face2Scene only loads .safetensors, which cannot run "
            "code. Convert it once (e.g. load the state dict and save it with safetensors.torch.save_file) or "
            "download the .safetensors release of the model.")
    try:
        from spandrel import ModelLoader, UnsupportedModelError
    except ImportError as exc:
        raise MissingBackboneError(
            "Face-restoration model files are loaded with spandrel: pip install spandrel") from exc
    try:
        descriptor = ModelLoader(device="cpu").load_from_file(str(path))
    except UnsupportedModelError as exc:
        raise ArchitectureMismatchError(
            f"spandrel does not recognise '{path.name}' as a model it supports ({exc}). Use a GFPGAN / "
            "RestoreFormer file (CodeFormer needs the spandrel_extra_arches package).") from exc
    if getattr(descriptor, "purpose", None) != "FaceSR" or descriptor.input_channels != 3:
        raise ArchitectureMismatchError(
            f"'{path.name}' is a {descriptor.architecture.name} model for '{descriptor.purpose}', not a face "
            "restorer; put upscalers in models/upscale_models and pick a face-restoration model here.")
    return descriptor


def face_model_with_patcher(path: Path) -> tuple[Any, Any]:
    """``(spandrel descriptor, ModelPatcher)`` of a face-restoration file, for callers that keep them across runs."""
    descriptor = load_face_model(path)
    return descriptor, new_patcher(descriptor.model)


def _run_face_model(descriptor, faces: list[np.ndarray], patcher=None) -> list[np.ndarray]:
    patcher = patcher if patcher is not None else new_patcher(descriptor.model)
    module = loaded(patcher)  # the descriptor's own model, now on ComfyUI's device
    dtype = next(module.parameters()).dtype
    out = []
    for face in faces:
        x = torch.from_numpy(face).permute(2, 0, 1)[None].to(patcher.load_device, dtype) / 255.0
        y = descriptor(x)  # 1, 3, 512, 512 in [0, 1]
        out.append((y[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8))
    return out


def restore_faces(faces: Faces, backend: str, model_path: Path | None = None,
                  restored: torch.Tensor | None = None, face_model: tuple[Any, Any] | None = None) -> list[np.ndarray | None]:
    """Ref-FR for every entry with a face: ``uint8 (512, 512, 3)`` restored aligned faces (``None`` where no face).

    Args:
        faces: from the detect node.
        backend: ``"embedded"`` (the package's offline Ref-FR, uses ``faces.references``), ``"model file"``
            (``model_path``, through spandrel) or ``"restored faces input"`` (``restored``: IMAGE with one face
            per image of the batch, any square size, from any other node).
        face_model: for ``"model file"``, the already loaded ``face_model_with_patcher(model_path)``.
    """
    from ..face2scene_core.reffr.given import GivenFaceRefFR

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    todo = [e.aligned.image for e in faces.entries if e.has_face]
    if backend == "restored faces input":
        if restored is None:
            raise ValueError("backend 'restored faces input' needs the restored_faces input connected "
                             "(faces restored by any node, one per image, in the order of 'aligned_faces')")
        given = to_arrays(restored, "restored_faces")
        if len(given) != len(faces):
            raise ValueError(f"restored_faces has {len(given)} image(s) but there are {len(faces)} photo(s); "
                             "give one restored face per photo, in the order of 'aligned_faces'")
        hq = [GivenFaceRefFR(g, size=faces.size).restore(e.aligned) for g, e in zip(given, faces.entries) if e.has_face]
    elif backend == "model file":
        descriptor, patcher = face_model if face_model is not None else (load_face_model(model_path), None)
        hq = _run_face_model(descriptor, todo, patcher) if todo else []
    else:
        from ..face2scene_core.reffr import default_reffr

        reffr = default_reffr(faces.size)
        hq = [reffr.restore(face, faces.references) for face in todo]
    it = iter(hq)
    return [next(it) if e.has_face else None for e in faces.entries]


def faces_image(faces: Faces, hq: list[np.ndarray | None]) -> torch.Tensor:
    """IMAGE ``[B, 512, 512, 3]`` of restored faces (grey where the photo has no face)."""
    return to_image([h if h is not None else grey(faces.size, faces.size) for h in hq])


class Face2SceneRefFR:
    DESCRIPTION = ("Reference-based face restoration (Ref-FR) of the aligned faces: the pack's embedded restorer "
                   "(uses the reference photos), a face-restoration model from models/facerestore_models "
                   "(GFPGAN, RestoreFormer... through spandrel), or faces restored by any other node.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("restored_faces",)
    OUTPUT_TOOLTIPS = ("Restored aligned faces, 512x512, one per photo (grey when the photo has no face).",)
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "faces": (FACES, {"tooltip": "From Face2Scene Detect & Align Faces."}),
                "backend": (list(BACKENDS), {"default": "embedded", "tooltip": "embedded: shipped, offline, uses "
                            "the references. model file: face_model below. restored faces input: the IMAGE input."}),
                "face_model": ([folders.NONE_CHOICE] + folders.folder_list(folders.FACERESTORE_FOLDER), {
                    "tooltip": "Face-restoration model (.safetensors) from models/facerestore_models."}),
            },
            "optional": {"restored_faces": ("IMAGE", {"tooltip": "Faces restored by another node from "
                                                      "'aligned_faces' (one per photo, same order)."})},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, face_model):
        # checked when the node runs, with the folders searched in the message
        return True if isinstance(face_model, str) else f"face_model must be a file name, got {face_model!r}"

    def restore(self, faces, backend, face_model, restored_faces=None):
        path = None
        if backend == "model file":
            path = folders.resolve_model_file(folders.FACERESTORE_FOLDER, face_model, "face-restoration model")
        hq = restore_faces(faces, backend, path, restored_faces)
        return (faces_image(faces, hq),)


__all__ = ["BACKENDS", "Face2SceneRefFR", "face_model_with_patcher", "faces_image", "load_face_model", "restore_faces"]
