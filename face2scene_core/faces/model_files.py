"""Locating model files the user supplies (insightface packs); nothing here downloads."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import WeightsNotFoundError


def find_model_file(model_dir: Path, names: tuple[str, ...], patterns: tuple[str, ...]) -> Path | None:
    """First file named in ``names`` (then matching ``patterns``) in ``model_dir`` or one/two levels below."""
    folders = [model_dir] + sorted(p for p in model_dir.glob("*") if p.is_dir())
    folders += sorted(p for p in model_dir.glob("*/*") if p.is_dir())
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    for folder in folders:
        for pattern in patterns:
            hits = sorted(folder.glob(pattern))
            if hits:
                return hits[0]
    return None


def check_model_dir(model_dir: str | os.PathLike | None, what: str) -> Path:
    """``model_dir`` as a Path; :class:`WeightsNotFoundError` naming ``what`` when it is None or not a folder."""
    if model_dir is None:
        raise WeightsNotFoundError(
            f"The insightface {what} needs model_dir: the folder holding an insightface model pack "
            "(e.g. ComfyUI/models/insightface/models/buffalo_l). It is never downloaded."
        )
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise WeightsNotFoundError(
            f"insightface model folder '{path}' does not exist. Point model_dir at the folder holding the "
            f"{what} ONNX files (e.g. ComfyUI/models/insightface/models/buffalo_l); nothing is downloaded."
        )
    return path
