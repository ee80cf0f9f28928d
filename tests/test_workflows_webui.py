"""The UI-format workflows of ``workflows/`` in ComfyUI's web UI, in headless Chromium.

Each ``*_ui.json`` is loaded into the page of a real ComfyUI server with the pack (as a user dropping the
file would): every node type must be known to the UI, no "missing nodes" dialog may appear, and the API
prompt the UI builds from the graph must be the matching ``*_api.json`` (so both formats describe the same
graph). A screenshot of each graph is saved; the prompt the UI built for the face preview is then run.
Needs the ComfyUI test host and Chromium + chromedriver + selenium.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from comfyui_host import REPO_ROOT, ComfyServer, ComfyWebUI
from comfyui_host import pack_fixtures as pf
from comfyui_host.fixtures import comfy_browser, comfy_host  # noqa: F401
from PIL import Image

SCREENSHOTS_ENV = "FACE2SCENE_SCREENSHOTS"
"""Folder to copy the screenshots to (e.g. a CI artifact folder); default: only pytest's temp folder."""


@pytest.fixture(scope="module")
def server(comfy_host, tmp_path_factory) -> Iterator[ComfyServer]:
    srv = ComfyServer(tmp_path_factory.mktemp("f2s_webui"), comfy_host)
    srv.input_dir.mkdir(parents=True, exist_ok=True)
    for example in ("astronaut_lq.png", "refs/astronaut_ref.png"):  # the files the workflows name
        shutil.copy(REPO_ROOT / "example_inputs" / example, srv.input_dir)
    with srv:
        yield srv


@pytest.fixture(scope="module")
def ui(server, comfy_browser) -> Iterator[ComfyWebUI]:
    with ComfyWebUI(server.url, browser=comfy_browser, window_size=(1920, 1080)) as page:
        yield page


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("f2s_webui_screenshots")


@pytest.mark.parametrize("name", pf.WORKFLOW_NAMES)
def test_ui_workflow_loads_with_every_node_known(ui, server, shots, name):
    workflow = pf.ui_workflow(name)
    report = ui.load(workflow, shots / f"{name}.png", fit=True)
    assert report.all_types_known, (report.unknown_types, report.dialog_missing_types)
    assert report.dialog_text == "" and report.prompt_error is None
    assert [n["type"] for n in report.graph_nodes] == [n["type"] for n in workflow["nodes"]]
    assert report.link_count == len(workflow["links"])
    display = {k: v["display_name"] for k, v in server.object_info().items() if k.startswith("Face2Scene")}
    assert all(n["title"] == display[n["type"]] for n in report.graph_nodes if n["type"] in display)

    # the prompt the UI builds from this graph is the API-format workflow shipped beside it
    assert report.api_prompt == pf.api_workflow(name, test_inputs=False)

    with Image.open(report.screenshot) as shot:
        assert shot.format == "PNG" and shot.width == 1920 and shot.height > 800
        grey = np.asarray(shot.convert("L"), dtype=np.float32)
    assert grey.std() > 15  # nodes drawn, not a blank canvas
    if os.environ.get(SCREENSHOTS_ENV):
        Path(os.environ[SCREENSHOTS_ENV]).mkdir(parents=True, exist_ok=True)
        shutil.copy(report.screenshot, Path(os.environ[SCREENSHOTS_ENV]) / report.screenshot.name)
    print(f"{name}: screenshot {report.screenshot}")


def test_prompt_built_by_the_ui_runs_on_the_server(ui, server, shots):
    report = ui.load(pf.ui_workflow("face_preview"), shots / "face_preview_run.png")
    prompt = report.api_prompt
    run = server.run(prompt, timeout=300)
    assert run.success, run.error
    (face,) = run.images("43")
    with Image.open(server.output_dir / face["subfolder"] / face["filename"]) as im:
        assert im.size == (512, 512)
