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
        images, names, count, report, files = comfy_runtime.call_node("Face2SceneLoadGallery", folder=str(folder),
                                                                      mode="one by one", limit=0)
    assert names == files == ["a.png", "c.png"] and count == 2
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


def test_a_reference_without_a_face_is_named_by_its_file_through_the_files_output(comfy_runtime):
    """Load Gallery's ``files`` output wired to ``reference_files``: the executor's error names the faceless file."""
    from comfyui_host import pack_fixtures as pf

    refs = comfy_runtime.input_dir / "f2s_refs_named"
    photos = comfy_runtime.input_dir / "f2s_photo_named"
    for folder in (refs, photos):
        folder.mkdir(parents=True, exist_ok=True)
    Image.open(pf.dataset(pf.PORTRAIT_REF)).convert("RGB").reduce(3).save(refs / "a_same_person.png")
    Image.fromarray(pf.load_rgb(pf.dataset(pf.NO_FACE))[pf.NO_FACE_CROP]).save(refs / "b_building.png")
    Image.fromarray(pf.load_rgb(pf.dataset(pf.PORTRAIT))).save(photos / "portrait.png")
    gallery = lambda folder, mode: {"class_type": "Face2SceneLoadGallery",  # noqa: E731
                                    "inputs": {"folder": folder.name, "mode": mode, "limit": 0}}
    detect = {"image": ["2", 0], "face": "match references", "index": 0, "detector": "retinaface",
              "min_face_size": 32, "if_no_face": "error", "references": ["1", 0]}
    prompt = {"1": gallery(refs, "batch (pad to largest)"), "2": gallery(photos, "one by one"),
              "3": {"class_type": "Face2SceneDetectFaces", "inputs": {**detect, "reference_files": ["1", 4]}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}
    named = comfy_runtime.execute(prompt)
    assert not named.success and "reference 2 of 2 (b_building.png)" in named.error_message, named.error_message
    del prompt["3"]["inputs"]["reference_files"]  # not connected: still a clear message, by number
    numbered = comfy_runtime.execute(prompt)
    assert not numbered.success and "reference 2 of 2 (#1)" in numbered.error_message, numbered.error_message
    (refs / "b_building.png").unlink()  # only the person: the graph runs
    assert comfy_runtime.execute({**prompt, "3": {**prompt["3"], "inputs": {**detect, "reference_files": ["1", 4]}}}).success
