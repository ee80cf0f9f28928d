"""Face2Scene Model Loader: FaDeX + the one-step restorer (embedded CPU model, or SD-Turbo + adapter)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..face2scene_core.errors import ArchitectureMismatchError, WeightsNotFoundError
from . import folders
from .model import DTYPE_CHOICES, Face2SceneModel, resolve_dtype
from .types import CATEGORY, MODEL

log = logging.getLogger(__name__)

BACKENDS = ("embedded", "SD-Turbo")
WEIGHTS_ENV = "FACE2SCENE_EMBEDDED_WEIGHTS"
"""Environment variable: a folder used instead of the package's ``face2scene_core/weights`` (same layout:
``fadex/`` + ``restorer.safetensors``), e.g. weights you trained yourself."""


def embedded_weights_dir() -> Path:
    """The embedded weights folder: ``$FACE2SCENE_EMBEDDED_WEIGHTS`` if set, else the package's own."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    from ..face2scene_core.pipeline import EMBEDDED_DIR

    return EMBEDDED_DIR


def _load_fadex(weights: Path):
    from ..face2scene_core.fadex.model import FaDeX

    folder = weights / "fadex"
    if not (folder / "config.json").is_file() or not list(folder.glob("*.safetensors")):
        raise WeightsNotFoundError(
            f"The embedded FaDeX weights are missing: expected '{folder}/config.json' and a .safetensors file. "
            f"Reinstall the pack (the weights ship with it), or point ${WEIGHTS_ENV} at a folder holding fadex/."
        )
    return FaDeX.from_pretrained(str(folder), use_safetensors=True)


def _load_restorer(backend: str, checkpoint: Path | None, adapter: Path | None, weights: Path):
    from ..face2scene_core.restorer.adapter import read_adapter_spec
    from ..face2scene_core.restorer.loading import load_sd_turbo_restorer, restorer_from_adapter

    if backend == "SD-Turbo":
        if adapter is None:
            raise WeightsNotFoundError(
                "The SD-Turbo backend needs a Face2Scene adapter trained for SD-Turbo (MapNet + LoRA). Put it in "
                f"one of {folders.searched_folders(folders.FACE2SCENE_FOLDER)} and pick it as 'adapter'; "
                "'(embedded)' is the CPU model's adapter and only works with the embedded backend."
            )
        return load_sd_turbo_restorer(checkpoint, adapter)  # refuses an embedded-model adapter
    path = adapter if adapter is not None else weights / "restorer.safetensors"
    if not path.is_file():
        raise WeightsNotFoundError(
            f"The embedded restorer weights are missing: '{path}'. Reinstall the pack (the weights ship with it), "
            f"or point ${WEIGHTS_ENV} at a folder holding restorer.safetensors."
        )
    if read_adapter_spec(path).get("codec", {}).get("type") == "vae":
        raise ArchitectureMismatchError(
            f"adapter '{path.name}' was trained for SD-Turbo: choose backend 'SD-Turbo' and your SD-Turbo checkpoint."
        )
    return restorer_from_adapter(str(path))


def load_model(backend: str, checkpoint: Path | None, adapter: Path | None, dtype: str = "auto", *,
               weights_dir: Path | None = None) -> Face2SceneModel:
    """Build the ``FACE2SCENE_MODEL``.

    Args:
        backend: ``"embedded"`` (small CPU model shipped with the pack) or ``"SD-Turbo"``.
        checkpoint: the SD-Turbo single-file checkpoint (SD-Turbo backend only).
        adapter: a Face2Scene adapter file; ``None`` = the embedded one (embedded backend only).
        dtype: ``"auto" | "fp16" | "bf16" | "fp32"``.
        weights_dir: embedded weights folder (default :func:`embedded_weights_dir`).

    Raises:
        WeightsNotFoundError / ArchitectureMismatchError: with what to do.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    weights = weights_dir or embedded_weights_dir()
    fadex = _load_fadex(weights)
    restorer = _load_restorer(backend, checkpoint, adapter, weights)
    mapnet = restorer.mapnet
    if mapnet is not None and int(mapnet.config.in_channels) != fadex.feature_channels:
        raise ArchitectureMismatchError(
            f"the restorer's MapNet reads {mapnet.config.in_channels}-channel FaDeX features but the FaDeX in "
            f"'{weights / 'fadex'}' gives {fadex.feature_channels}; use an adapter trained with this FaDeX."
        )
    import comfy.model_management as mm

    torch_dtype = resolve_dtype(dtype, mm.get_torch_device())
    sources = {"fadex": str(weights / "fadex"), "restorer": str(adapter or weights / "restorer.safetensors")}
    if checkpoint is not None:
        sources["sd_turbo"] = str(checkpoint)
    return Face2SceneModel(fadex, restorer, backend=backend, dtype=torch_dtype, sources=sources)


class Face2SceneModelLoader:
    DESCRIPTION = ("Loads Face2Scene: the FaDeX degradation encoder and the one-step restorer (with MapNet). "
                   "'embedded' runs on any CPU with the weights shipped in the pack; 'SD-Turbo' uses your "
                   "SD-Turbo checkpoint plus a Face2Scene adapter. Models are managed by ComfyUI (GPU/CPU).")
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("FaDeX + restorer, for the Face2Scene nodes.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "backend": (list(BACKENDS), {"default": "embedded", "tooltip": "embedded: small CPU model shipped "
                        "with the pack. SD-Turbo: the paper's model, needs the checkpoint and an SD-Turbo adapter."}),
            "sd_turbo_checkpoint": ([folders.NONE_CHOICE] + folders.folder_list(folders.CHECKPOINTS_FOLDER), {
                "tooltip": "SD-Turbo single-file checkpoint from models/checkpoints (SD-Turbo backend only)."}),
            "adapter": ([folders.EMBEDDED_CHOICE] + folders.folder_list(folders.FACE2SCENE_FOLDER), {
                "tooltip": "Face2Scene adapter (MapNet + LoRA) from models/face2scene; (embedded) = the shipped one."}),
            "dtype": (list(DTYPE_CHOICES), {"default": "auto", "tooltip": "Weights precision. auto: fp32 on CPU, "
                      "fp16/bf16 on a GPU that supports it."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, sd_turbo_checkpoint, adapter):
        # File names are checked when the node runs, so a missing file is reported with the folders searched
        # (ComfyUI's own check would only say "value not in list").
        for name, value in (("sd_turbo_checkpoint", sd_turbo_checkpoint), ("adapter", adapter)):
            if not isinstance(value, str):
                return f"{name} must be a file name, got {type(value).__name__}"
        return True

    def load(self, backend, sd_turbo_checkpoint, adapter, dtype):
        checkpoint = None
        if backend == "SD-Turbo":
            checkpoint = folders.resolve_model_file(folders.CHECKPOINTS_FOLDER, sd_turbo_checkpoint,
                                                    "SD-Turbo checkpoint")
        adapter_path = None
        if adapter != folders.EMBEDDED_CHOICE:
            adapter_path = folders.resolve_model_file(folders.FACE2SCENE_FOLDER, adapter, "Face2Scene adapter")
        return (load_model(backend, checkpoint, adapter_path, dtype),)


__all__ = ["BACKENDS", "WEIGHTS_ENV", "Face2SceneModelLoader", "embedded_weights_dir", "load_model"]
