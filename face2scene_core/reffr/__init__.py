"""Reference-based face restorers (Ref-FR): the interface and the implementations shipped offline.

The learned refiner (``RefinedRefFR``, ``RefineNet``) needs torch and diffusers; it is imported on first
use, so that ``import face2scene_core.reffr`` (and the transfer alone) stays light.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from .base import RefFR
from .given import GivenFaceRefFR
from .transfer import ReferenceTransferRefFR

logger = logging.getLogger(__name__)

#: Folder of the shipped refiner weights (``RefineNet``, safetensors).
EMBEDDED_REFINER_DIR = Path(__file__).resolve().parent.parent / "weights" / "reffr_refine"


def __getattr__(name: str):
    if name in ("RefinedRefFR", "RefineNet"):
        from . import refine

        return getattr(refine, name)
    if name == "REFFR_BACKENDS":
        from .refine import RefinedRefFR

        #: Ref-FR implementations that work offline, by name (a model the user brings plugs into ``RefFR``).
        return {"reference-transfer": ReferenceTransferRefFR, "reference-transfer+refine": RefinedRefFR,
                "given": GivenFaceRefFR}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.lru_cache(maxsize=4)
def default_reffr(size: int = 512) -> RefFR:
    """The embedded offline Ref-FR for ``size`` px faces: reference detail transfer followed by the shipped
    refiner (:class:`RefinedRefFR`); the transfer alone if the refiner weights are missing (logged).
    Cached: every caller shares one instance per size (it holds no per-face state)."""
    if (EMBEDDED_REFINER_DIR / "config.json").is_file():
        from .refine import RefinedRefFR

        return RefinedRefFR.from_pretrained(EMBEDDED_REFINER_DIR, size=size)
    logger.warning("no refiner weights in %s; the embedded Ref-FR runs the reference transfer alone", EMBEDDED_REFINER_DIR)
    return ReferenceTransferRefFR.for_size(size)


def reffr_from_name(refiner: str, size: int) -> RefFR:
    """The offline Ref-FR a training config names: ``"embedded"`` = transfer + the shipped refiner, ``""`` = the
    transfer alone, anything else = transfer + the RefineNet in that folder."""
    if refiner == "embedded":
        return default_reffr(size)
    if not refiner:
        return ReferenceTransferRefFR.for_size(size)
    from .refine import RefinedRefFR

    return RefinedRefFR.from_pretrained(refiner, size=size)


__all__ = ["RefFR", "reffr_from_name", "GivenFaceRefFR", "ReferenceTransferRefFR", "RefinedRefFR", "RefineNet", "REFFR_BACKENDS",
           "default_reffr", "EMBEDDED_REFINER_DIR"]
