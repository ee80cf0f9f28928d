"""Reference-based face restorers (Ref-FR): the interface and the implementations shipped offline."""

from .base import RefFR
from .given import GivenFaceRefFR
from .transfer import ReferenceTransferRefFR

#: Ref-FR implementations that work offline, by name (a model the user brings plugs into ``RefFR``).
REFFR_BACKENDS: dict[str, type[RefFR]] = {
    "reference-transfer": ReferenceTransferRefFR,
    "given": GivenFaceRefFR,
}


def default_reffr() -> RefFR:
    """The embedded offline Ref-FR: reference detail transfer (no weights, CPU)."""
    return ReferenceTransferRefFR()


__all__ = ["RefFR", "GivenFaceRefFR", "ReferenceTransferRefFR", "REFFR_BACKENDS", "default_reffr"]
