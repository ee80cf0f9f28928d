"""Face2Scene: restore a whole degraded photo using the face as a degradation oracle.

The standalone library behind the ComfyUI node pack and the ``face2scene`` command line.
It never imports ComfyUI. Heavy submodules (torch models) are imported on use.
"""

from .errors import (
    ArchitectureMismatchError,
    ConfigError,
    Face2SceneError,
    FaceTooSmallError,
    InputImageError,
    MissingBackboneError,
    NoFaceError,
    ReferenceImageError,
    WeightsNotFoundError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ArchitectureMismatchError",
    "ConfigError",
    "Face2SceneError",
    "FaceTooSmallError",
    "InputImageError",
    "MissingBackboneError",
    "NoFaceError",
    "ReferenceImageError",
    "WeightsNotFoundError",
]
