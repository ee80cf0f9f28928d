"""The UI-format workflows of ``workflows/`` in ComfyUI's web UI, in headless Chromium.

The server's input folder is filled by ``tools/copy_examples.py`` (the one command the README gives users). Each
``workflows/<name>.json`` is loaded into the page of a real ComfyUI server with the pack, in a 1600x1000 window
(as a user dropping the file would): every node type must be known to the UI, no "missing nodes" dialog may
appear, the whole graph must fit the window at a zoom where the UI still draws titles and widgets, and the prompt
the UI builds from the graph must execute the same as ``workflows/api/<name>.json`` (same nodes, links and input
values; UI-only widgets such as Load Image's ``upload`` button, which newer frontends no longer send, are
ignored). A screenshot of each graph is saved. The face preview's prompt is run on the server, and the
all-in-one workflow is queued from the page: its Show Report node must show the JSON report, without a
different-person warning for the shipped example. Needs the ComfyUI test host and Chromium + chromedriver +
selenium.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from comfyui_host import REPO_ROOT, ComfyServer, ComfyWebUI
from comfyui_host import pack_fixtures as pf
from comfyui_host.fixtures import comfy_browser, comfy_host  # noqa: F401
from PIL import Image

WINDOW = (1600, 1000)
READABLE_ZOOM = 0.8
"""The shipped graphs must fit a 1600x1000 window at this zoom or more (ComfyUI stops drawing titles and widgets
below about 0.6)."""
SCREENSHOTS_ENV = "FACE2SCENE_SCREENSHOTS"
"""Folder to copy the screenshots to (e.g. a CI artifact folder); default: only pytest's temp folder."""


@pytest.fixture(scope="module")
def server(comfy_host, tmp_path_factory) -> Iterator[ComfyServer]:
    srv = ComfyServer(tmp_path_factory.mktemp("f2s_webui"), comfy_host)
    srv.input_dir.mkdir(parents=True, exist_ok=True)
    copy = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "copy_examples.py"), "--input", str(srv.input_dir)],
                          capture_output=True, text=True, check=True)
    assert copy.stdout.count("copied") == 4, copy.stdout
    with srv:
        yield srv


@pytest.fixture(scope="module")
def ui(server, comfy_browser) -> Iterator[ComfyWebUI]:
    with ComfyWebUI(server.url, browser=comfy_browser, window_size=WINDOW) as page:
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

    # the prompt the UI builds from this graph executes the same as the API-format workflow shipped with it
    info = server.object_info()
    assert pf.execution_view(report.api_prompt, info) == pf.execution_view(pf.api_workflow(name, test_inputs=False), info)
    assert report.fit_scale >= READABLE_ZOOM, f"{name} fits {WINDOW} only at zoom {report.fit_scale:.2f}"

    with Image.open(report.screenshot) as shot:
        assert shot.format == "PNG" and shot.width == WINDOW[0] and shot.height > 800
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


def test_all_in_one_run_from_the_page_shows_its_report_without_a_false_alarm(ui, server, shots):
    """The first run of the shipped example: the report is visible in Show Report, and the example's reference (the
    same person) is not flagged as someone else (docs/identity_threshold.md)."""
    ui.load(pf.ui_workflow("all_in_one"), shots / "all_in_one_run.png", fit=True)
    text = ui.queue_and_read("44", "report_text", timeout=600)
    report = json.loads(text)
    (image,) = report["images"]
    assert image["face_used"] == 0 and image["degradation_tokens"] is True
    assert "matches the references best" in image["reason"] and "someone else" not in image["reason"]
