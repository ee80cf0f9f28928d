"""Every API workflow of ``workflows/`` executed by ComfyUI's own executor, in this process, on real photos.

The pack is loaded by ComfyUI's loader; each workflow's LoadImage nodes get a real portrait and a clean
reference photo of the same person (``../shared/datasets``), the gallery workflow a folder of real photos of
three sizes (one without a face). Outputs must exist, have the input's size and differ from it where the
workflow restores something. Needs the ComfyUI test host and the embedded weights (skips otherwise).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from comfyui_host import pack_fixtures as pf
from comfyui_host.fixtures import comfy_host, comfy_runtime  # noqa: F401


@pytest.fixture(scope="module")
def runtime(comfy_runtime):
    reason = pf.missing_weights()
    if reason:
        pytest.skip(reason)
    pf.prepare_inputs(comfy_runtime.input_dir)
    return comfy_runtime


@pytest.fixture(scope="module")
def results(runtime):
    """Each workflow run once (results shared by the checks below)."""
    return {name: runtime.execute(pf.api_workflow(name)) for name in pf.WORKFLOW_NAMES}


def expected_shape(kind: str) -> tuple[int, int, int] | None:
    return {"photo": pf.workflow_photo().shape, "face": (512, 512, 3),
            "panel": (2 * 256 + 24 + 112, 512, 3)}.get(kind)


@pytest.mark.parametrize("name", pf.WORKFLOW_NAMES)
def test_workflow_runs_and_writes_images_of_the_right_size(results, runtime, name):
    result = results[name]
    assert result.success, result.error_message
    photo = pf.workflow_photo()
    check = pf.CHECKS[name]
    for node_id, kind in check.images.items():
        if kind == "gallery":
            continue
        files = result.images(node_id)
        assert len(files) == 1 and files[0].is_file(), (node_id, files)
        out = pf.load_rgb(files[0])
        assert out.shape == expected_shape(kind), (node_id, out.shape)
        if node_id in check.restored:
            diff = np.abs(out.astype(np.int16) - photo.astype(np.int16))
            if name == "no_tokens":  # the model without a degradation code leaves the photo (almost) as it is
                assert diff.mean() < 2.0, f"node {node_id}: without tokens the photo changed by {diff.mean():.2f}"
            else:  # the noisy portrait comes back closer to the clean one
                gain = pf.psnr_to_clean(out) - pf.psnr_to_clean(photo)
                assert gain > 2.0, f"node {node_id}: {gain:.2f} dB over the noisy input"


def test_gallery_workflow_saves_every_photo_under_its_name(results, runtime):
    result = results["gallery"]
    assert result.success, result.error_message
    shown = result.images("40")  # Save Gallery reports the files it wrote in ComfyUI's output folder
    names = sorted((runtime.input_dir / pf.GALLERY_FOLDER).iterdir())
    assert [p.name for p in shown] == [f"{p.stem}.png" for p in names]
    assert all(p.parent == runtime.output_dir / pf.GALLERY_FOLDER for p in shown)
    changes = []
    for src, out in zip(names, shown, strict=True):
        original, restored = pf.load_rgb(src), pf.load_rgb(out)
        assert restored.shape == original.shape, src.name
        changes.append(np.abs(restored.astype(np.int16) - original.astype(np.int16)).mean())
    # an old photo, a group photo, a photo without a face: the model must not damage them (it barely changes them)
    assert all(c < 20 for c in changes), changes
    # one photo per call of the all-in-one node: the gallery is a list, not a batch
    executed = [data["node"] for event, data in result.events if event == "executing"]
    assert executed.count("30") == 1 and len(result.outputs["30"][0]) == 3


def test_staged_and_all_in_one_give_the_same_restoration(results):
    staged = pf.load_rgb(results["staged"].images("40")[0])
    all_in_one = pf.load_rgb(results["all_in_one"].images("40")[0])
    assert np.abs(staged.astype(np.int16) - all_in_one.astype(np.int16)).max() <= 1


def test_tokens_change_the_restoration(results):
    """The paper's ablation: the same photo restored with and without the degradation tokens differs."""
    with_tokens = pf.load_rgb(results["staged"].images("40")[0]).astype(np.int16)
    without = pf.load_rgb(results["no_tokens"].images("40")[0]).astype(np.int16)
    assert np.abs(with_tokens - without).mean() > 0.5
    assert pf.psnr_to_clean(with_tokens.astype(np.uint8)) > pf.psnr_to_clean(without.astype(np.uint8)) + 2.0


def test_face_preview_shows_the_chosen_face_and_its_restoration(results):
    result = results["face_preview"]
    aligned = pf.load_rgb(result.images("42")[0]).astype(np.int16)
    restored = pf.load_rgb(result.images("43")[0]).astype(np.int16)
    assert aligned.std() > 20 and 0 < np.abs(aligned - restored).mean() < 60
    annotated = pf.load_rgb(result.images("41")[0]).astype(np.int16)
    photo = pf.workflow_photo().astype(np.int16)
    changed = np.abs(annotated - photo).max(axis=2) > 30
    assert 0.001 < changed.mean() < 0.2  # boxes, landmarks and the reason drawn over the photo


def test_report_nodes_show_the_json_report_of_every_photo(results):
    """Show Report (node 44) sends the all-in-one node's report to the page: one JSON text per photo."""
    (text,) = results["all_in_one"].outputs_ui["44"]["text"]
    (image,) = json.loads(text)["images"]
    assert image["face_used"] == 0 and "similarity" in image["reason"] and len(image["identity_scores"]) >= 1
    texts = results["gallery"].outputs_ui["44"]["text"]
    assert len(texts) == 3 and [json.loads(t)["images"][0]["degradation_tokens"] for t in texts] == [True, True, False]
