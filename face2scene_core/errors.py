"""Errors raised by face2scene_core.

Every error a user can cause is a subclass of :class:`Face2SceneError` and carries a
message that says what went wrong *and* what to do about it. Callers (the CLI, the
ComfyUI nodes, the gallery batch runner) catch ``Face2SceneError`` to report a problem
without a traceback; anything else is a bug.
"""

from __future__ import annotations


class Face2SceneError(Exception):
    """Base class of every user-facing error of the package."""


class InputImageError(Face2SceneError):
    """An input path is missing, unreadable, or not an image."""


class NoFaceError(Face2SceneError):
    """No face was found where one is needed (the photo or a reference)."""


class FaceTooSmallError(Face2SceneError):
    """A face was found but is smaller than the smallest face the method can use."""


class ReferenceImageError(Face2SceneError):
    """A reference image is unusable (no face, unreadable, wrong identity)."""


class OutputPathError(Face2SceneError):
    """The output cannot be written where asked (no write access, the input folder itself, locked by another run)."""


class WeightsNotFoundError(Face2SceneError):
    """A weight file or model folder the user asked for is not there."""


class ArchitectureMismatchError(Face2SceneError):
    """A weight file exists but holds a different model than the one expected."""


class MissingBackboneError(Face2SceneError):
    """An optional pretrained backbone (LPIPS, DINO, ArcFace...) was asked for but not supplied."""


class ConfigError(Face2SceneError):
    """A configuration file or value is invalid (unknown key, wrong type, out of range)."""


class CodeFileError(Face2SceneError):
    """A degradation code file is missing, corrupt, or was made by another model."""


__all__ = [
    "Face2SceneError",
    "CodeFileError",
    "InputImageError",
    "NoFaceError",
    "FaceTooSmallError",
    "ReferenceImageError",
    "OutputPathError",
    "WeightsNotFoundError",
    "ArchitectureMismatchError",
    "MissingBackboneError",
    "ConfigError",
]
