"""Where the real photos used by the tests live: ``shared/datasets`` beside the repository (as CI clones it),
or the folder named by ``FACE2SCENE_DATASETS``. Tests that need them skip, naming what is missing, otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def datasets_dir() -> Path:
    here = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    if here.is_dir():
        return here
    env = os.environ.get("FACE2SCENE_DATASETS")
    if env and Path(env).is_dir():
        return Path(env)
    pytest.skip("real photos not found: put shared/datasets beside the repo or set FACE2SCENE_DATASETS",
                allow_module_level=True)  # also called at import time by modules that need the photos throughout
