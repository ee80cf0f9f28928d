"""Reference-based face restorers (Ref-FR): the interface and the implementations shipped offline."""

from .base import RefFR
from .given import GivenFaceRefFR

__all__ = ["RefFR", "GivenFaceRefFR"]
