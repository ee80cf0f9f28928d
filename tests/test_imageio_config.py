import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from face2scene_core.config import from_dict, load_config
from face2scene_core.errors import ConfigError, InputImageError
from face2scene_core.imageio import list_images, load_image, safe_output_path, save_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def test_load_real_photos_of_every_mode():
    # RGBA PNG, greyscale PNG and WebP data under a .jpg name all come back as RGB uint8
    rgba = next((DATA / "faces_real/kair").rglob("*.png"))
    grey = next((DATA / "faces_identity/face-api.js").rglob("*.png"))
    webp = next((DATA / "faces_identity/deepface").rglob("img47.jpg"))
    for p in (rgba, grey, webp):
        img = load_image(p)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(InputImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputImageError, match="folder"):
        load_image(tmp_path)
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    with pytest.raises(InputImageError, match="not an image"):
        load_image(bad)


def test_save_is_atomic_and_never_overwrites(tmp_path):
    img = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    dest = save_image(tmp_path / "a.png", img)
    assert np.array_equal(load_image(dest), img)
    mode = stat.S_IMODE(os.stat(dest).st_mode)
    assert mode & stat.S_IRGRP, f"saved file is not readable by others: {oct(mode)}"
    assert safe_output_path(dest) == tmp_path / "a_1.png"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert list_images(tmp_path) == [dest]


@dataclass
class _Inner:
    rate: float = 0.1


@dataclass
class _Cfg:
    steps: int = 10
    name: str = "x"
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    inner: _Inner = field(default_factory=_Inner)


def test_config_loads_yaml_with_overrides_and_rejects_unknown_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 5\ninner:\n  rate: 0.5\n")
    cfg = load_config(_Cfg, f, ["name=run1", "inner.rate=0.25", "sizes=[3,4]"])
    assert (cfg.steps, cfg.name, cfg.sizes, cfg.inner.rate) == (5, "run1", [3, 4], 0.25)
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(_Cfg, {"stepz": 3})
    with pytest.raises(ConfigError, match="integer"):
        from_dict(_Cfg, {"steps": "many"})
