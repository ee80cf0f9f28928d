"""Face2Scene Load Gallery inside a real ComfyUI host: unreadable files are skipped and named, photos upright."""

from __future__ import annotations

import importlib
import json
import logging

from pathlib import Path

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


def test_a_shoot_code_saved_in_one_graph_restores_a_faceless_photo_in_another(comfy_runtime):
    """Save Degradation after the staged graph on a noisy portrait; Load Degradation + One-Step Restore on a noisy
    scene without a face (the same noise): better than the input, and a file of another model is refused."""
    from comfyui_host import pack_fixtures as pf

    rng = np.random.default_rng(0)
    noisy = lambda img: np.clip(img + rng.normal(0, 15, img.shape), 0, 255).round().astype(np.uint8)  # noqa: E731
    clean_scene = pf.load_rgb(pf.dataset("scenes_clean/ffdnet/testsets/CBSD68/103070.png"))[:192, :192]
    Image.fromarray(noisy(pf.load_rgb(pf.dataset(pf.PORTRAIT)))).save(comfy_runtime.input_dir / "f2s_noisy_face.png")
    Image.fromarray(noisy(clean_scene)).save(comfy_runtime.input_dir / "f2s_noisy_scene.png")
    model = {"class_type": "Face2SceneModelLoader", "inputs": {"backend": "embedded", "sd_turbo_checkpoint": "(none)",
                                                               "adapter": "(embedded)", "dtype": "auto"}}
    save = {"1": model, "10": {"class_type": "LoadImage", "inputs": {"image": "f2s_noisy_face.png"}},
            "20": {"class_type": "Face2SceneDetectFaces", "inputs": {
                "image": ["10", 0], "face": "largest", "index": 0, "detector": "retinaface", "min_face_size": 32,
                "if_no_face": "error"}},
            "21": {"class_type": "Face2SceneRefFR", "inputs": {"faces": ["20", 0], "backend": "embedded",
                                                               "face_model": "(none)"}},
            "22": {"class_type": "Face2SceneExtractDegradation", "inputs": {"model": ["1", 0], "faces": ["20", 0],
                                                                            "restored_faces": ["21", 0]}},
            "23": {"class_type": "Face2SceneDegradationTokens", "inputs": {"model": ["1", 0], "degradation": ["22", 0]}},
            "50": {"class_type": "Face2SceneSaveDegradation", "inputs": {
                "model": ["1", 0], "tokens": ["23", 0], "degradation": ["22", 0],
                "file_name": "f2s_test/shoot_code.safetensors"}}}
    saved = comfy_runtime.execute(save)
    assert saved.success, saved.error_message
    path = Path(saved.output("50"))
    assert path.parent == comfy_runtime.output_dir / "f2s_test" and path.suffix == ".safetensors"
    load = {"1": model, "10": {"class_type": "LoadImage", "inputs": {"image": "f2s_noisy_scene.png"}},
            "51": {"class_type": "Face2SceneLoadDegradation", "inputs": {"model": ["1", 0],
                                                                         "file_name": f"f2s_test/{path.name}"}},
            "30": {"class_type": "Face2SceneOneStepRestore", "inputs": {
                "model": ["1", 0], "image": ["10", 0], "tokens": ["51", 0], "cfg_scale": 1.07, "tile_size": 0,
                "tile_overlap": 64, "color_fix": "none", "paste_face": False}},
            "40": {"class_type": "PreviewImage", "inputs": {"images": ["30", 0]}}}
    restored = comfy_runtime.execute(load)
    assert restored.success, restored.error_message
    out = (restored.output("30")[0].numpy() * 255).round().astype(np.uint8)
    scene = pf.load_rgb(comfy_runtime.input_dir / "f2s_noisy_scene.png")
    mse = lambda a: float(np.mean((a.astype(np.float64) - clean_scene) ** 2))  # noqa: E731
    assert 10 * np.log10(mse(scene) / mse(out)) > 2.0  # the shoot's noise code denoises the faceless photo
    codes = importlib.import_module(f"{PACK_NAME}.face2scene_core.codes")
    code = codes.load_code(path)
    code.meta["fadex_id"] = "feedfacecafe"
    codes.save_code(comfy_runtime.output_dir / "f2s_test" / "other.safetensors", code)
    load["51"]["inputs"]["file_name"] = "f2s_test/other.safetensors"
    refused = comfy_runtime.execute(load)
    assert not refused.success and "made by restorer" in refused.error_message and "feedfacecafe" in refused.error_message
