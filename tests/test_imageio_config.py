import os
import stat
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np
import pytest

from face2scene_core.config import from_dict, load_config
from face2scene_core.errors import ConfigError, InputImageError
from face2scene_core.imageio import list_images, load_image, safe_output_path, save_image
from face2scene_core.training.data import default_datasets_dir

DATA = default_datasets_dir()  # shared/datasets beside the checkout, $FACE2SCENE_DATASETS, or beside its origin


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


def test_config_paths_to_shared_photos_follow_the_datasets_folder(tmp_path, monkeypatch):
    """Configs name the shared photos as ``../shared/datasets/...`` relative to the checkout; a checkout that is not
    beside ``shared/`` (a clone in a temporary folder) finds them where ``default_datasets_dir`` says, here the folder
    in FACE2SCENE_DATASETS, and a clone of a local repository finds the ``shared/`` beside its origin."""
    import subprocess

    from face2scene_core.training import data

    photos = tmp_path / "elsewhere" / "datasets"
    (photos / "scenes").mkdir(parents=True)
    save_image(photos / "scenes" / "a.png", np.zeros((8, 8, 3), np.uint8))
    (photos / "manifest.csv").write_text("path\n")
    checkout = tmp_path / "clone" / "repo"
    checkout.mkdir(parents=True)
    monkeypatch.setattr(data, "REPO_ROOT", checkout)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACE2SCENE_DATASETS", str(photos))
    assert data.resolve_path("../shared/datasets/manifest.csv") == (photos / "manifest.csv").resolve()
    assert data.expand_images(["../shared/datasets/scenes/*"]) == [(photos / "scenes" / "a.png").resolve()]
    assert data.resolve_path("../shared/other.csv") == Path("../shared/other.csv")  # only the datasets alias moves

    monkeypatch.delenv("FACE2SCENE_DATASETS")
    origin = tmp_path / "elsewhere" / "main"
    subprocess.run(["git", "init", "-q", str(origin)], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(checkout / "c")], check=True, capture_output=True)
    monkeypatch.setattr(data, "REPO_ROOT", checkout / "c")
    (tmp_path / "elsewhere" / "shared").mkdir()
    (photos.parent / "datasets").rename(tmp_path / "elsewhere" / "shared" / "datasets")
    assert data.default_datasets_dir() == tmp_path / "elsewhere" / "shared" / "datasets"
    assert data.expand_images(["../shared/datasets/scenes"]) == [
        (tmp_path / "elsewhere" / "shared" / "datasets" / "scenes" / "a.png").resolve()]
