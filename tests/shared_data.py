"""Where the real photos used by the tests live: the package's own rule
(:func:`face2scene_core.training.data.default_datasets_dir`: ``shared/datasets`` beside the repository, the folder
named by ``FACE2SCENE_DATASETS``, or ``shared/datasets`` beside the local repository this clone came from). Tests that
need them skip, naming what is missing, otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest


def datasets_dir() -> Path:
    from face2scene_core.training.data import default_datasets_dir

    here = default_datasets_dir()
    if here.is_dir():
        return here
    pytest.skip(f"real photos not found ({here}): put shared/datasets beside the repo or set FACE2SCENE_DATASETS",
                allow_module_level=True)  # also called at import time by modules that need the photos throughout
