"""Face2Scene Load Gallery inside a real ComfyUI host: unreadable files are skipped and named, photos upright."""

from __future__ import annotations

import importlib
import json
import logging

import numpy as np
import pytest
from comfyui_host import PACK_NAME
from comfyui_host.fixtures import comfy_host, comfy_runtime  # noqa: F401
from PIL import Image


def test_load_gallery_skips_unreadable_files_with_a_warning(comfy_runtime, tmp_path, caplog):
    gallery = importlib.import_module(f"{PACK_NAME}.nodes.gallery")
    errors = importlib.import_module(f"{PACK_NAME}.face2scene_core.errors")
    folder = tmp_path / "g"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(folder / "a.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: loaded upright, 30 wide x 20 high becomes 20 wide x 30 high
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(folder / "c.png", exif=exif)
    (folder / "b.jpg").write_bytes(b"")
    (folder / "d.png").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        images, names, count, report = comfy_runtime.call_node("Face2SceneLoadGallery", folder=str(folder),
                                                               mode="one by one", limit=0)
    assert names == ["a.png", "c.png"] and count == 2
    report = json.loads(report)
    assert report["files"] == names and [r["file"] for r in report["skipped"]] == ["b.jpg", "d.png"]
    assert all(r["reason"] for r in report["skipped"])
    assert tuple(images[1].shape) == (1, 30, 20, 3)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("b.jpg" in m for m in warned) and any("d.png" in m for m in warned)
    _, _, skipped = gallery.load_gallery_report(folder)
    assert [s.split(":")[0] for s in skipped] == ["b.jpg", "d.png"]
    for f in ("a.png", "c.png"):
        (folder / f).unlink()
    with pytest.raises(errors.InputImageError, match="none of the 2 image file"):
        gallery.load_gallery(folder)
