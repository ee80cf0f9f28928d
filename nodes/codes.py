"""Face2Scene Save / Load Degradation: a shoot's degradation code as a file, reused for photos without a face."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .types import CATEGORY, DEGRADATION, MODEL, TOKENS, Degradation, Tokens

log = logging.getLogger(__name__)


def model_ids_of(model) -> dict[str, str]:
    """The code-file ids of a ``FACE2SCENE_MODEL`` (computed once per model object)."""
    from ..face2scene_core.codes import ids_of

    return model.helper("code_ids", lambda: ids_of(model.restorer(), model.fadex()))


def save_degradation(model, tokens: Tokens, path: Path, degradation: Degradation | None = None) -> tuple[Path, str]:
    """Pool the tokens of every image that has them (weight: the native face crop's area when ``degradation`` is
    given, else equal) and write the code file. Returns ``(path written, one-line summary)``."""
    from ..face2scene_core.codes import DegradationCode, pool_codes, save_code
    from ..face2scene_core.errors import CodeFileError
    from ..face2scene_core.imageio import safe_output_path

    entries = degradation.entries if degradation is not None else [None] * len(tokens)
    if degradation is not None and len(entries) != len(tokens):
        raise ValueError(f"degradation has {len(entries)} image(s) but tokens {len(tokens)}; connect the same batch")
    ids = model_ids_of(model)
    codes = []
    for i, (t, e) in enumerate(zip(tokens.entries, entries)):
        if t is None:
            continue
        side = float(e.lq_crop.shape[0]) if e is not None and e.lq_crop is not None else 1.0
        emb = e.embedding if e is not None and e.embedding is not None else np.zeros(0, np.float32)
        src = {"photo": f"image {i + 1}", "side_px": side, "weight": min(side, 256.0) ** 2}
        codes.append(DegradationCode(tokens=t.float().cpu(), embedding=emb, meta={**ids, "sources": [src]}))
    if not codes:
        raise CodeFileError("no image of this batch has degradation tokens (no usable face): nothing to save")
    if len({c.embedding.shape for c in codes}) > 1:
        for c in codes:
            c.embedding = np.zeros(0, np.float32)
    code = pool_codes(codes)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = save_code(safe_output_path(path), code)
    return written, f"degradation code of {len(codes)} face(s) of {len(tokens)} image(s) -> {written}"


def load_degradation(model, path: Path) -> tuple[Tokens, str]:
    """Read a code file made by this model: ``(Tokens with one shared entry, summary)``."""
    from ..face2scene_core.codes import load_code

    code = load_code(path, expect=model_ids_of(model))
    return Tokens([code.tokens]), f"degradation code {path.name}: {code.faces} face(s), {made_of(code.meta)}"


def made_of(meta: dict) -> str:
    photos = sorted({str(s.get("photo")) for s in meta.get("sources", []) if s.get("photo")})
    return "from " + (", ".join(photos[:4]) + (" ..." if len(photos) > 4 else "") if photos else "unknown photos")


def _resolve(name: str, kind: str) -> Path:
    from .gallery import resolve_folder

    return resolve_folder(name, kind)


class Face2SceneSaveDegradation:
    DESCRIPTION = ("Saves the degradation tokens as a code file (.safetensors, with the ids of the models that made "
                   "it and where the faces were). Several images: their faces are pooled into one code, for a shoot "
                   "that shares one degradation. Load it with Face2Scene Load Degradation to restore photos that "
                   "have no usable face.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("The code file written.",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The model that computed the tokens (the code belongs to it)."}),
            "tokens": (TOKENS, {"tooltip": "From Face2Scene Degradation Tokens."}),
            "file_name": ("STRING", {"default": "face2scene/shoot_code.safetensors", "tooltip": "Absolute path, "
                          "or a path inside ComfyUI's output folder; an existing file is never overwritten "
                          "(_1, _2... is added)."}),
        }, "optional": {
            "degradation": (DEGRADATION, {"tooltip": "From Face2Scene Extract Degradation: larger faces weigh more "
                            "in the pool, and the FaDeX embedding is saved too."}),
        }}

    def save(self, model, tokens, file_name, degradation=None):
        if not str(file_name).endswith(".safetensors"):
            raise ValueError(f"file_name must end in .safetensors, got {file_name!r}")
        path, summary = save_degradation(model, tokens, _resolve(file_name, "output"), degradation)
        log.info(summary)
        return {"ui": {"text": [summary]}, "result": (str(path),)}


class Face2SceneLoadDegradation:
    DESCRIPTION = ("Loads a degradation code file (from Face2Scene Save Degradation or `face2scene code`) as tokens "
                   "for Face2Scene One-Step Restore: restore photos without a usable face with a shoot's code. A "
                   "file made by another model is refused, naming the model that made it.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (TOKENS, "STRING")
    RETURN_NAMES = ("tokens", "info")
    OUTPUT_TOOLTIPS = ("One code, shared by every image of the batch it restores.",
                       "What the code holds: faces pooled, source photos, models.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The model that will restore with the code (it must have made it)."}),
            "file_name": ("STRING", {"default": "face2scene/shoot_code.safetensors", "tooltip": "Absolute path, "
                          "or a path inside ComfyUI's output folder (where Save Degradation writes), else its "
                          "input folder."}),
        }}

    @classmethod
    def IS_CHANGED(cls, model, file_name):
        for kind in ("output", "input"):
            p = _resolve(file_name, kind)
            if p.is_file():
                return f"{p}:{p.stat().st_mtime_ns}:{p.stat().st_size}"
        return "missing"

    def load(self, model, file_name):
        path = _resolve(file_name, "output")
        if not path.is_file() and _resolve(file_name, "input").is_file():
            path = _resolve(file_name, "input")
        tokens, info = load_degradation(model, path)
        return (tokens, info)


__all__ = ["Face2SceneLoadDegradation", "Face2SceneSaveDegradation", "load_degradation", "save_degradation"]
