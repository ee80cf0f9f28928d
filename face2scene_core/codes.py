"""Degradation codes: what the restorer conditions on, saved to a file and reused.

A code is the 21 MapNet tokens computed from one face pair (or pooled over several faces), plus FaDeX's global
embedding and where they came from. It belongs to the models that made it: a file records the ids of its FaDeX and
its restorer (a hash of their weights) and is refused by any other model, with a message that names the model
that made it.

    code = pipe.code(photo, refs)            # one photo's face; ``face="all"`` pools every usable face
    save_code("shoot.safetensors", code)
    pipe(faceless_photo, code=load_code("shoot.safetensors", expect=model_ids(pipe)))

Pooling (a shoot, or several faces of one photo) is a weighted mean of the tokens and embeddings; a face weighs
``side ** 2 * detection score`` (``side``: its native crop side in photo pixels, capped at 256), so a large, sharp
detection counts most and a small one still adds evidence.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import CodeFileError

FORMAT = "face2scene.degradation_code"
FORMAT_VERSION = "1"
MAX_WEIGHT_SIDE = 256
"""A face's weight grows with its area up to this native side (px); beyond it the evidence no longer improves."""


@dataclass
class DegradationCode:
    """``tokens (1, 21, D)`` float32 on the CPU, FaDeX ``embedding (E,)``, and ``meta`` (JSON-able): the model ids
    (``restorer_id``, ``fadex_id``), ``sources`` (one entry per face: photo, bbox, score, weight) and whatever else
    a caller adds (e.g. estimates)."""

    tokens: torch.Tensor
    embedding: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def faces(self) -> int:
        return len(self.meta.get("sources", [])) or 1


def module_id(module: torch.nn.Module) -> str:
    """A short hash of a module's weights (names, shapes, values rounded to bfloat16): the same weights give the same
    id whether the model runs in float32 or bfloat16."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(torch.bfloat16).view(torch.int16)
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def ids_of(restorer: torch.nn.Module, fadex: torch.nn.Module) -> dict[str, str]:
    """``{"restorer_id", "fadex_id"}``: the restorer's id covers its MapNet and its network."""
    parts = [m for m in (getattr(restorer, "mapnet", None), getattr(restorer, "unet", restorer)) if m is not None]
    return {"restorer_id": hashlib.sha256("".join(module_id(m) for m in parts).encode()).hexdigest()[:12],
            "fadex_id": module_id(fadex)}


def model_ids(pipe) -> dict[str, str]:
    """:func:`ids_of` a :class:`~face2scene_core.pipeline.Face2ScenePipeline` (cached on it)."""
    ids = getattr(pipe, "_model_ids", None)
    if ids is None:
        ids = pipe._model_ids = ids_of(pipe.restorer, pipe.fadex)
    return ids


def face_weight(side: float, score: float) -> float:
    """Weight of one face's code in a pool: ``min(side, 256) ** 2 * score``."""
    return float(min(float(side), MAX_WEIGHT_SIDE)) ** 2 * max(float(score), 0.0)


def pool_codes(codes: Sequence[DegradationCode], weights: Sequence[float] | None = None) -> DegradationCode:
    """The weighted mean of ``codes`` (default weights: each code's summed face weights, else equal)."""
    codes = list(codes)
    if not codes:
        raise ValueError("pool_codes needs at least one code")
    ids = {(c.meta.get("restorer_id"), c.meta.get("fadex_id")) for c in codes}
    if len(ids) > 1:
        raise CodeFileError(f"cannot pool codes made by different models: {sorted(ids)}")
    if weights is None:
        weights = [sum(s.get("weight", 0.0) for s in c.meta.get("sources", [])) or 1.0 for c in codes]
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(codes),) or not np.all(w >= 0) or w.sum() <= 0:
        raise ValueError(f"weights must be {len(codes)} non-negative numbers, not all 0; got {list(weights)}")
    w = w / w.sum()
    tokens = sum(float(wi) * c.tokens.float() for wi, c in zip(w, codes))
    emb = sum(float(wi) * c.embedding.astype(np.float64) for wi, c in zip(w, codes)).astype(np.float32)
    sources = [s for c in codes for s in c.meta.get("sources", [])]
    meta = {**{k: v for k, v in codes[0].meta.items() if k not in ("sources", "pooled_weights")},
            "sources": sources, "pooled_weights": [round(float(v), 4) for v in w]}
    return DegradationCode(tokens=tokens, embedding=emb, meta=meta)


def save_code(path: str | os.PathLike, code: DegradationCode) -> Path:
    """Write ``code`` as safetensors (tensors ``tokens``, ``embedding``; JSON metadata), atomically: a file that
    exists is never half written. An existing ``path`` is replaced."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CodeFileError(f"a degradation code is a .safetensors file; got '{path.name}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": json.dumps(code.meta, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({"tokens": code.tokens.detach().to("cpu", torch.float32).contiguous(),
                   "embedding": torch.from_numpy(np.ascontiguousarray(code.embedding, dtype=np.float32))},
                  tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def made_by(meta: dict) -> str:
    return f"restorer {meta.get('restorer_id', '?')} + FaDeX {meta.get('fadex_id', '?')}"


def check_code(meta: dict, expect: dict[str, str], what: str = "this degradation code") -> None:
    """Raise :class:`CodeFileError` (one line, naming both models) unless ``meta`` was made by ``expect``'s models."""
    if any(meta.get(k) != v for k, v in expect.items()):
        raise CodeFileError(f"{what} was made by {made_by(meta)}, but this model is {made_by(expect)}; make the "
                            "code again with this model (`face2scene code`)")


def load_code(path: str | os.PathLike, *, expect: dict[str, str] | None = None) -> DegradationCode:
    """Read a code file written by :func:`save_code`. ``expect`` (:func:`model_ids` of the model that will use it):
    a file made by other weights is refused.

    Raises:
        CodeFileError: missing, not a code file, corrupt, or made by another model (one line, naming that model).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CodeFileError(f"degradation code file not found: '{path}'")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            names = set(fh.keys())
            tensors = {k: fh.get_tensor(k) for k in ("tokens", "embedding") if k in names}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CodeFileError(f"'{path.name}' is not a readable degradation code file ({exc}); save it again with "
                            "`face2scene code`") from None
    if header.get("format") != FORMAT or set(tensors) != {"tokens", "embedding"}:
        raise CodeFileError(f"'{path.name}' is a safetensors file but not a Face2Scene degradation code; make one "
                            "with `face2scene code PHOTO --refs DIR -o CODE.safetensors`")
    if header.get("format_version") != FORMAT_VERSION:
        raise CodeFileError(f"'{path.name}' is a degradation code of format version {header.get('format_version')}; "
                            f"this Face2Scene reads version {FORMAT_VERSION}: make the code again")
    try:
        meta = json.loads(header.get("meta", "{}"))
    except json.JSONDecodeError:
        raise CodeFileError(f"'{path.name}': its metadata is corrupt; make the code again") from None
    tokens = tensors["tokens"].float()
    if tokens.ndim != 3 or tokens.shape[0] != 1:
        raise CodeFileError(f"'{path.name}': tokens have shape {tuple(tokens.shape)}, expected (1, N, D)")
    if expect is not None:
        check_code(meta, expect, f"'{path.name}'")
    return DegradationCode(tokens=tokens, embedding=tensors["embedding"].float().numpy(), meta=meta)


def shoot_code(pipe, files: Sequence[Path], references: Sequence[np.ndarray] = (), *, face: str = "all",
               on_photo=None) -> tuple[DegradationCode, list[dict]]:
    """One code for a shoot: every usable face of every photo in ``files``, pooled by face weight.

    Photos without a usable face (or unreadable) are listed, not fatal. ``on_photo(row)`` after each photo.
    Returns ``(code, rows)``; raises :class:`CodeFileError` when no photo has a usable face.
    """
    from .errors import Face2SceneError
    from .imageio import load_photo

    codes, rows = [], []
    for f in files:
        try:
            code = pipe.code(load_photo(f).rgb, references, face=face, source=Path(f).name)
            row = {"photo": str(f), "faces": code.faces, "weight": round(sum(s["weight"] for s in
                                                                            code.meta["sources"]), 1)}
            codes.append(code)
        except Face2SceneError as exc:
            row = {"photo": str(f), "faces": 0, "skipped": str(exc).split(". ")[0]}
        rows.append(row)
        if on_photo:
            on_photo(row)
    if not codes:
        raise CodeFileError(f"none of the {len(rows)} photo(s) has a usable face to read the degradation from")
    pooled = pool_codes(codes)
    pooled.meta["photos"] = len(codes)
    return pooled, rows


__all__ = ["DegradationCode", "FORMAT", "FORMAT_VERSION", "face_weight", "check_code", "ids_of", "load_code", "made_by",
           "model_ids", "module_id",
           "pool_codes", "save_code", "shoot_code"]
