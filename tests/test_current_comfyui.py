"""The pack in a CURRENT ComfyUI server (e.g. 0.3.64 with frontend 1.27.10), when one is available.

CI has only the 2024 host; this test runs where ``FACE2SCENE_CURRENT_COMFYUI`` names a ComfyUI checkout whose
requirements are importable by ``FACE2SCENE_CURRENT_PYTHON`` (default: this interpreter), and skips otherwise. It
checks what the 2024 host cannot: the Template Browser's list (``/workflow_templates``) holds exactly the pack's
five UI workflows, each one and its ``.jpg`` thumbnail are served, the pack's nodes and web extension load, and
the all-in-one workflow's prompt runs (report included); and in the current frontend (headless Chromium) every
workflow opens readable and the report shows after a run queued from the page. To set one up from the registries, e.g.:

    python3.11 -m venv /tmp/curvenv && echo $PWD/.venv/lib/python3.11/site-packages > /tmp/curvenv/lib/python3.11/site-packages/main.pth
    /tmp/curvenv/bin/pip install comfyui-frontend-package==1.27.10 comfyui-embedded-docs torchsde av alembic \\
        SQLAlchemy "pydantic~=2.0" "pydantic-settings~=2.0" kornia
    FACE2SCENE_CURRENT_COMFYUI=/path/to/ComfyUI FACE2SCENE_CURRENT_PYTHON=/tmp/curvenv/bin/python pytest tests/test_current_comfyui.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from comfyui_host import PACK_NAME, REPO_ROOT, ComfyServer, ComfyWebUI
from comfyui_host import pack_fixtures as pf
from comfyui_host.fixtures import comfy_browser  # noqa: F401
from comfyui_host.paths import HostPaths

CURRENT = os.environ.get("FACE2SCENE_CURRENT_COMFYUI")
pytestmark = pytest.mark.skipif(not CURRENT or not (Path(CURRENT) / "main.py").is_file(),
                                reason="no current ComfyUI: set FACE2SCENE_CURRENT_COMFYUI to a ComfyUI checkout")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("current_comfyui")
    (root / "custom_nodes").mkdir()
    (root / "custom_nodes" / PACK_NAME).symlink_to(REPO_ROOT)
    extra = root / "extra_model_paths.yaml"
    extra.write_text(f"face2scene_current:\n    custom_nodes: {root / 'custom_nodes'}\n")
    host = HostPaths(root=root, comfyui=Path(CURRENT), custom_nodes=root / "custom_nodes", extra_model_paths=extra)
    srv = ComfyServer(root / "work", host, python=os.environ.get("FACE2SCENE_CURRENT_PYTHON", sys.executable),
                      startup_timeout=600)
    srv.input_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "copy_examples.py"), "--input", str(srv.input_dir)],
                   check=True, capture_output=True)
    with srv:
        yield srv


def test_template_browser_lists_and_serves_the_ui_workflows_with_thumbnails(server):
    listed = json.loads(server.get("/workflow_templates").body)
    assert sorted(listed[PACK_NAME]) == sorted(f"face2scene_{n}" for n in pf.WORKFLOW_NAMES), listed.get(PACK_NAME)
    for name in listed[PACK_NAME]:
        workflow = server.get(f"/api/workflow_templates/{PACK_NAME}/{name}.json")
        assert workflow.status == 200 and {"version", "nodes", "links"} <= set(json.loads(workflow.body)), name
        thumb = server.get(f"/api/workflow_templates/{PACK_NAME}/{name}.jpg")
        assert thumb.status == 200 and thumb.body[:3] == b"\xff\xd8\xff", name


def test_nodes_and_web_extension_load(server):
    info = server.object_info()
    assert len([k for k in info if k.startswith("Face2Scene")]) == 12
    extensions = json.loads(server.get("/extensions").body)
    assert any(e.endswith("show_report.js") and PACK_NAME in e for e in extensions), extensions


def test_all_in_one_runs_and_reports_without_a_false_alarm(server):
    run = server.run(pf.api_workflow("all_in_one", test_inputs=False), timeout=600)
    assert run.success, run.error
    (text,) = run.history["outputs"]["44"]["text"]
    (image,) = json.loads(text)["images"]
    assert image["face_used"] == 0 and "someone else" not in image["reason"]


def test_current_frontend_opens_every_workflow_readable_and_shows_the_report(server, comfy_browser, tmp_path):
    """In the current frontend (headless Chromium, 1600x1000): every node known, the graph fits at zoom >= 0.8, the
    prompt it builds executes the same as the API file (it no longer sends Load Image's "upload"), and Show Report's
    text box (web/show_report.js) shows the report after a run queued from the page."""
    info = server.object_info()
    with ComfyWebUI(server.url, browser=comfy_browser, window_size=(1600, 1000), timeout=300) as ui:
        for name in pf.WORKFLOW_NAMES:
            report = ui.load(pf.ui_workflow(name), tmp_path / f"{name}.png", fit=True)
            assert report.all_types_known and report.dialog_text == "", (name, report.unknown_types)
            assert report.fit_scale >= 0.8, (name, report.fit_scale)
            assert pf.execution_view(report.api_prompt, info) == pf.execution_view(pf.api_workflow(name, test_inputs=False), info)
        ui.load(pf.ui_workflow("all_in_one"), tmp_path / "run.png", fit=True)
        (image,) = json.loads(ui.queue_and_read("44", "report_text", timeout=900))["images"]
    assert image["face_used"] == 0 and "someone else" not in image["reason"]
