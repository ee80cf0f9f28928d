"""Reference-based face restorers (Ref-FR): the interface and the implementations shipped offline."""

from .base import RefFR
from .given import GivenFaceRefFR


def default_reffr() -> RefFR:
    """The embedded offline Ref-FR: reference detail transfer (no weights, CPU)."""
    from .transfer import ReferenceTransferRefFR

    return ReferenceTransferRefFR()


__all__ = ["RefFR", "GivenFaceRefFR", "default_reffr"]
