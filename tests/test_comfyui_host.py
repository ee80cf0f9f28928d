"""The real-ComfyUI test host works, with ComfyUI's built-in nodes and our pack's entry point.

In-process executor, HTTP server and web UI are each exercised on a real photo: LoadImage ->
ImageScale (nearest-exact, exact 2x/3x decimation) -> ImageInvert -> SaveImage, checked pixel by pixel
against the photo. Needs the host built by ``.ci/setup_comfyui.sh`` (skips with that command otherwise).
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from comfyui_host import DATA_DIR, PACK_NAME, REPO_ROOT, ComfyServer, ComfyWebUI
from comfyui_host.fixtures import comfy_browser, comfy_host, comfy_runtime, comfy_server  # noqa: F401
from PIL import Image, ImageOps

from face2scene_core.training.data import default_datasets_dir

DATASETS = default_datasets_dir()  # shared/datasets beside the checkout, $FACE2SCENE_DATASETS, or beside its origin
PHOTO = DATASETS / "faces_identity" / "dlib" / "examples" / "faces" / "2008_001322.jpg"  # 500x375, 3 people
PHOTO_NAME = "photo.jpg"
SCALED_W, SCALED_H = 250, 125  # exact 2x (width) and 3x (height) decimation of 500x375


def _photo() -> np.ndarray:
    if not PHOTO.is_file():
        pytest.skip(f"dataset photo missing: {PHOTO} (set FACE2SCENE_DATASETS to the shared/datasets folder)")
    with Image.open(PHOTO) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def _scale_invert_prompt(image: str) -> dict:
    """API prompt: LoadImage -> ImageScale -> (SaveImage 'scaled', ImageInvert -> SaveImage 'inverted')."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                     "width": SCALED_W, "height": SCALED_H, "crop": "disabled"}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "inverted"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "scaled"}},
    }  # fmt: skip


def _check_scaled_inverted(photo: np.ndarray, scaled: np.ndarray, inverted: np.ndarray) -> None:
    """nearest-exact picks source pixel floor((i + 0.5) * factor): rows 1::3, columns 1::2 here.
    SaveImage truncates 255 * value, so an inverted pixel may be one below 255 - p."""
    assert scaled.shape == inverted.shape == (SCALED_H, SCALED_W, 3)
    expected = photo[1::3, 1::2]
    assert np.array_equal(scaled, expected)
    diff = (255 - expected.astype(np.int16)) - inverted.astype(np.int16)
    assert diff.min() >= 0 and diff.max() <= 1, (diff.min(), diff.max())
    assert np.abs(inverted.astype(np.int16) - scaled.astype(np.int16)).mean() > 20  # really inverted


def _png(data: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


# --- the pack's entry point ----------------------------------------------------------------------
def test_pack_entry_imports_without_comfyui() -> None:
    """``__init__.py`` imports as a package of any name, without ComfyUI, and exports the registries."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('some_pack_name', {str(REPO_ROOT / '__init__.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['some_pack_name'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "print(json.dumps({'classes': {k: v.__module__ for k, v in mod.NODE_CLASS_MAPPINGS.items()},\n"
        "                  'display': mod.NODE_DISPLAY_NAME_MAPPINGS,\n"
        "                  'comfy': sorted(m for m in ('comfy', 'folder_paths', 'server', 'execution') if m in sys.modules)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["comfy"] == []
    assert set(info["display"]) <= set(info["classes"])
    assert all(mod.startswith("some_pack_name.nodes") for mod in info["classes"].values()), info["classes"]


def test_comfyui_loader_imports_pack(comfy_runtime) -> None:
    """ComfyUI's own custom-node loader imported the pack, under the module name 'ComfyUI-Face2Scene' (its folder name)."""
    pack_dir = str(comfy_runtime.host.pack_dir)
    assert comfy_runtime.custom_node_imports.get(pack_dir) is True, comfy_runtime.boot_log[-3000:]
    assert pack_dir not in comfy_runtime.custom_node_errors
    assert comfy_runtime.pack_loaded
    pack = comfy_runtime.pack_module
    assert pack.__name__ == PACK_NAME
    assert Path(pack.__file__).resolve() == (REPO_ROOT / "__init__.py").resolve()
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert comfy_runtime.node_class(name) is cls
        assert comfy_runtime.nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name) == pack.NODE_DISPLAY_NAME_MAPPINGS.get(name)
    assert comfy_runtime.node_class("ImageInvert").__module__ == "nodes"  # ComfyUI's nodes, not our nodes/


def test_loader_failure_is_detected(comfy_runtime, tmp_path: Path) -> None:
    """A pack whose import fails is reported as failed, with its error (so the check above can fail)."""
    broken = tmp_path / "face2scene_broken_probe"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('needs the probe_dependency package')\n")
    ok, log = comfy_runtime.load_custom_node(broken)
    assert not ok
    assert "needs the probe_dependency package" in log


# --- in-process executor ------------------------------------------------------------------------
def test_inprocess_scale_invert_save(comfy_runtime) -> None:
    photo = _photo()
    shutil.copy(PHOTO, comfy_runtime.input_dir / PHOTO_NAME)
    result = comfy_runtime.execute(_scale_invert_prompt(PHOTO_NAME))
    assert result.success, result.error_message
    assert result.error_message is None
    assert sorted(result.validation.outputs) == ["4", "5"]
    executed = {data["node"] for event, data in result.events if event == "executing"}
    assert {"1", "2", "3", "4", "5"} <= executed
    inverted_files, scaled_files = result.images("4"), result.images("5")
    assert len(inverted_files) == len(scaled_files) == 1
    assert inverted_files[0].parent == comfy_runtime.output_dir
    _check_scaled_inverted(photo, _png(scaled_files[0]), _png(inverted_files[0]))
    # raw node output: IMAGE float32 [B, H, W, C] in 0..1
    image = result.output("2")
    assert image.dtype.is_floating_point and tuple(image.shape) == (1, SCALED_H, SCALED_W, 3)
    assert result.seconds < 10, result.seconds


def test_inprocess_reports_errors_users_see(comfy_runtime) -> None:
    _photo()
    name = "vanishing_photo.jpg"
    shutil.copy(PHOTO, comfy_runtime.input_dir / name)
    prompt = _scale_invert_prompt(name)
    assert comfy_runtime.validate(prompt).ok
    (comfy_runtime.input_dir / name).unlink()  # the file disappears after validation
    result = comfy_runtime.execute(prompt, validate=False)
    assert not result.success
    assert result.error["node_type"] == "LoadImage" and result.error["node_id"] == "1"
    assert result.error_message.startswith("Error occurred when executing LoadImage:")
    assert name in result.error_message

    missing = comfy_runtime.execute(prompt)  # validated this time: a clear validation error instead
    assert not missing.success and not missing.validation.ok
    assert missing.validation.node_errors["1"]["class_type"] == "LoadImage"
    assert f"Invalid image file: {name}" in missing.error_message

    unknown = comfy_runtime.execute({"1": {"class_type": "Face2SceneNoSuchNode", "inputs": {}}})
    assert not unknown.validation.ok and "Face2SceneNoSuchNode" in unknown.error_message


# --- HTTP server --------------------------------------------------------------------------------
def test_server_loaded_pack(comfy_server: ComfyServer) -> None:
    imports = comfy_server.custom_node_imports()
    assert imports.get(str(comfy_server.host.pack_dir)) is True, comfy_server.log_tail()
    info = comfy_server.object_info()
    assert {"LoadImage", "ImageScale", "ImageInvert", "SaveImage"} <= set(info)
    assert comfy_server.startup_seconds is not None


def test_server_scale_invert_save_and_view(comfy_server: ComfyServer) -> None:
    photo = _photo()
    shutil.copy(PHOTO, comfy_server.input_dir / PHOTO_NAME)
    run = comfy_server.run(_scale_invert_prompt(PHOTO_NAME))
    assert run.response.status == 200 and run.response.json["node_errors"] == {}
    assert run.success, run.error
    (inverted,), (scaled,) = run.images("4"), run.images("5")
    assert inverted["type"] == "output"
    _check_scaled_inverted(photo, _png(comfy_server.view(scaled)), _png(comfy_server.view(inverted)))
    assert (comfy_server.output_dir / inverted["subfolder"] / inverted["filename"]).is_file()


def test_server_rejects_missing_image_and_keeps_serving(comfy_server: ComfyServer) -> None:
    bad = _scale_invert_prompt("no_such_photo.png")
    run = comfy_server.run(bad)
    assert run.response.status == 400 and run.prompt_id is None
    body = run.response.json
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    (err,) = body["node_errors"]["1"]["errors"]
    assert err["type"] == "custom_validation_failed"
    assert "Invalid image file: no_such_photo.png" in err["details"]
    assert sorted(body["node_errors"]["1"]["dependent_outputs"]) == ["4", "5"]

    assert comfy_server.running and comfy_server.get("/system_stats").status == 200
    photo = _photo()
    shutil.copy(PHOTO, comfy_server.input_dir / PHOTO_NAME)
    good = {
        "1": {"class_type": "LoadImage", "inputs": {"image": PHOTO_NAME}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "after_error"}},
    }
    after = comfy_server.run(good)
    assert after.success, after.error or after.response.json
    assert _png(comfy_server.view(after.images("3")[0])).shape == photo.shape


# --- web UI -------------------------------------------------------------------------------------
def test_web_ui_loads_workflow(comfy_server: ComfyServer, comfy_browser, tmp_path: Path) -> None:
    photo = _photo()
    shutil.copy(PHOTO, comfy_server.input_dir / PHOTO_NAME)  # before the page lists the input folder
    workflow = json.loads((DATA_DIR / "scale_invert_ui.json").read_text())
    unknown_wf = copy.deepcopy(workflow)
    unknown_wf["nodes"].append({"id": 5, "type": "Face2SceneNoSuchNode", "pos": [20, 420], "size": {"0": 200, "1": 60},
                                "flags": {}, "order": 4, "mode": 0, "properties": {}})
    t0 = time.perf_counter()
    with ComfyWebUI(comfy_server.url, browser=comfy_browser) as ui:
        report = ui.load(workflow, tmp_path / "scale_invert_ui.png")
        broken = ui.load(unknown_wf, tmp_path / "unknown_node_ui.png")
    print(f"web UI: browser+page {ui.startup_seconds:.1f} s, load {report.seconds:.1f} s, total "
          f"{time.perf_counter() - t0:.1f} s, screenshot {report.screenshot}")

    assert {"LoadImage", "ImageScale", "ImageInvert", "SaveImage"} <= set(report.registered_types)
    assert report.all_types_known, (report.unknown_types, report.dialog_text)
    assert [n["type"] for n in report.graph_nodes] == ["LoadImage", "ImageScale", "ImageInvert", "SaveImage"]
    assert report.link_count == 3 and report.dialog_text == "" and report.prompt_error is None
    with Image.open(report.screenshot) as shot:
        assert shot.format == "PNG" and shot.width >= 800 and shot.height >= 400
        assert np.asarray(shot.convert("L")).std() > 10  # a drawn graph, not a blank page

    # the API prompt the UI builds from the graph runs on the server
    api = report.api_prompt
    assert {n["class_type"] for n in api.values()} == {"LoadImage", "ImageScale", "ImageInvert", "SaveImage"}
    run = comfy_server.run(api)
    assert run.success, run.error or run.response.json
    out = _png(comfy_server.view(run.images("4")[0]))
    expected = 255 - photo[1::3, 1::2].astype(np.int16)
    assert out.shape == (SCALED_H, SCALED_W, 3) and np.abs(out - expected).max() <= 1

    # an unknown node type is detected, as ComfyUI's own dialog reports it to the user
    assert not broken.all_types_known
    assert broken.unknown_types == ["Face2SceneNoSuchNode"] == broken.dialog_missing_types
    assert "Face2SceneNoSuchNode" in broken.dialog_text
    assert [n["has_errors"] for n in broken.graph_nodes] == [False] * 4 + [True]
