"""Every API workflow through ComfyUI's real HTTP server (``main.py --cpu``), and bad inputs reported by it.

One server for the module, with the pack and an extra model-paths file (a test ``models/`` folder holding a
tiny SD-Turbo adapter and a checkpoint of the wrong family). Each workflow is POSTed to ``/prompt``, waited
for on ``/history`` and its images fetched through ``/view``. Bad inputs (a batch of mixed sizes, a photo
without a face, a missing model file, a checkpoint that is not SD 2.1) must come back as ComfyUI error
reports naming the problem, and the server must keep serving. Needs the test host and the embedded weights.
"""

from __future__ import annotations

import copy
import io
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
from comfyui_host import ComfyServer
from comfyui_host import pack_fixtures as pf
from comfyui_host.fixtures import comfy_host  # noqa: F401
from PIL import Image

NO_FACE_NAME = "f2s_no_face.png"


@pytest.fixture(scope="module")
def server(comfy_host, tmp_path_factory) -> Iterator[ComfyServer]:
    reason = pf.missing_weights()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("f2s_server")
    models = work / "models"
    pf.build_tiny_sd_turbo(models)
    pf.write_sd15_header(models / "checkpoints" / "sd15_model.safetensors")
    (models / "facerestore_models").mkdir()
    paths = pf.write_extra_model_paths(models, work / "extra_model_paths.yaml")
    srv = ComfyServer(work, comfy_host, extra_args=("--extra-model-paths-config", str(paths)))
    pf.prepare_inputs(srv.input_dir)
    shutil.copy(pf.dataset(pf.NO_FACE), srv.input_dir / NO_FACE_NAME)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_server_lists_the_nodes_and_the_model_files(server):
    info = server.object_info()
    ours = {k: v for k, v in info.items() if k.startswith("Face2Scene")}
    assert len(ours) == 12 and {v["category"] for v in ours.values()} == {"Face2Scene"}
    loader = ours["Face2SceneModelLoader"]["input"]["required"]
    assert loader["sd_turbo_checkpoint"][0] == ["(none)", "sd15_model.safetensors", pf.TINY_SD_CHECKPOINT]
    assert loader["adapter"][0] == ["(embedded)", pf.TINY_SD_ADAPTER]
    assert ours["Face2SceneRestore"]["output_name"] == ["image", "restored_faces", "report"]


@pytest.mark.parametrize("name", pf.WORKFLOW_NAMES)
def test_server_runs_workflow_and_serves_its_images(server, name):
    run = server.run(pf.api_workflow(name), timeout=300)
    assert run.response.status == 200 and run.response.json["node_errors"] == {}
    assert run.success, run.error
    photo = pf.workflow_photo()
    check = pf.CHECKS[name]
    for node_id, kind in check.images.items():
        images = run.images(node_id)
        if kind == "gallery":
            gallery = pf.gallery_photos()
            assert [i["filename"] for i in images] == [name for name, _ in gallery]
            assert {i["subfolder"] for i in images} == {pf.GALLERY_FOLDER}
            for image, (_, original) in zip(images, gallery, strict=True):
                out = png(server.view(image))
                assert out.shape == original.shape
                # an old photo, a group photo, a photo without a face: the model must not damage them (it barely changes them)
                assert np.abs(out.astype(np.int16) - original.astype(np.int16)).mean() < 20
            continue
        (image,) = images
        out = png(server.view(image))
        size = {"photo": photo.shape, "face": (512, 512, 3), "panel": (648, 512, 3)}[kind]
        assert out.shape == size, (node_id, out.shape)
        if node_id in check.restored:
            diff = np.abs(out.astype(np.int16) - photo.astype(np.int16)).mean()
            # without a degradation code the model leaves the photo (almost) as it is; with one it removes the noise
            if name == "no_tokens":
                assert diff < 2.0, (node_id, diff)
            else:
                assert pf.psnr_to_clean(out) > pf.psnr_to_clean(photo) + 2.0, node_id


def _bad_prompts() -> dict[str, tuple[dict, str, str, str]]:
    """``{case: (prompt, failing node, exception class, text the message must hold)}``."""
    mixed = pf.api_workflow("gallery")
    mixed["12"]["inputs"]["mode"] = "batch"
    no_face = pf.api_workflow("face_preview")
    no_face["10"]["inputs"]["image"] = NO_FACE_NAME
    missing = pf.api_workflow("no_tokens")
    missing["1"]["inputs"]["adapter"] = "face2scene_v2.safetensors"
    wrong = pf.api_workflow("no_tokens")
    wrong["1"]["inputs"].update(backend="SD-Turbo", sd_turbo_checkpoint="sd15_model.safetensors",
                                adapter=pf.TINY_SD_ADAPTER)
    return {
        "mixed sizes": (mixed, "12", "InputImageError", "the gallery has 3 sizes"),
        "no face": (no_face, "20", "NoFaceError", "No face found in image 1 of 1"),
        "missing model file": (missing, "1", "WeightsNotFoundError", "'face2scene_v2.safetensors' not found. "
                               "Folders searched:"),
        "not SD 2.1": (wrong, "1", "ArchitectureMismatchError", "SD 1.x"),
    }


def test_bad_inputs_are_clear_errors_and_the_server_keeps_serving(server):
    for case, (prompt, node_id, error_type, text) in _bad_prompts().items():
        run = server.run(prompt, timeout=300)
        assert run.response.status == 200, (case, run.response.json)
        assert not run.success and run.error is not None, case
        assert run.error["node_id"] == node_id and run.error["exception_type"].endswith(f"errors.{error_type}"), \
            (case, run.error["exception_type"])
        assert text in run.error["exception_message"], (case, run.error["exception_message"])
        assert server.running and server.get("/system_stats").status == 200, case
    # the folder list in the missing-file message is ComfyUI's face2scene folders, the test one included
    message = server.run(_bad_prompts()["missing model file"][0]).error["exception_message"]
    assert str(server.work_dir / "models" / "face2scene") in message and "models/face2scene" in message

    # out-of-range widget: rejected at validation (HTTP 400) with the node and the input named
    invalid = copy.deepcopy(pf.api_workflow("face_preview"))
    invalid["20"]["inputs"]["min_face_size"] = 8
    run = server.run(invalid)
    assert run.response.status == 400 and "20" in run.response.json["node_errors"]
    assert "min_face_size" in str(run.response.json["node_errors"]["20"])

    after = server.run(pf.api_workflow("face_preview"), timeout=300)
    assert after.success, after.error
