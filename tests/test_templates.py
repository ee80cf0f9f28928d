"""The pack's files as current ComfyUI's Template Browser sees them.

Rules read from ComfyUI 0.3.64's ``app/custom_node_manager.py`` (Comfy-Org/ComfyUI a125cd8, Oct 2025):

* ``GET /workflow_templates`` lists, per pack folder, the stem of every ``*.json`` directly inside any of the
  folders ``example_workflows``, ``example``, ``examples``, ``workflow``, ``workflows`` (no subfolders);
* the files are served under ``/api/workflow_templates/<pack>/`` from the FIRST of those folders that exists, in
  that order; the others are shadowed (their templates answer 404);
* the frontend opens a listed name as a UI-format workflow (it needs ``version``, ``nodes``, ``links``) and shows
  ``<name>.jpg`` from the same folder as its thumbnail.

The 2024 host has no Template Browser; there the same files are checked by loading them in its web UI
(``test_workflows_webui.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("example_workflows", "example", "examples", "workflow", "workflows")
API = ROOT / "workflows" / "api"


def listed_templates() -> list[Path]:
    """What the Template Browser lists for this pack (every top-level JSON of every scanned folder)."""
    return sorted(p for name in SCANNED for p in (ROOT / name).glob("*.json"))


def served_folder() -> Path | None:
    """The folder ComfyUI serves the pack's templates from."""
    return next((ROOT / name for name in SCANNED if (ROOT / name).is_dir()), None)


def test_templates_are_served_from_workflows_and_every_listed_one_is_reachable():
    assert served_folder() == ROOT / "workflows", "a scanned folder before workflows/ would shadow it (404s)"
    listed = listed_templates()
    assert listed and all(p.parent == served_folder() for p in listed), listed


@pytest.mark.parametrize("path", listed_templates(), ids=lambda p: p.stem)
def test_every_listed_template_is_a_ui_workflow_with_a_thumbnail(path):
    workflow = json.loads(path.read_text())
    assert {"version", "nodes", "links"} <= set(workflow), f"{path.name} is not a UI-format workflow"
    assert workflow["nodes"] and all({"id", "type", "pos", "size"} <= set(n) for n in workflow["nodes"])
    with Image.open(path.with_suffix(".jpg")) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (400, 400)


def test_api_workflows_and_other_json_are_not_listed():
    listed = {p.stem for p in listed_templates()}
    apis = sorted(API.glob("*.json"))
    assert {p.stem for p in apis} == listed, "every template has its API-format twin in workflows/api/ and back"
    for p in apis:
        prompt = json.loads(p.read_text())
        assert "nodes" not in prompt and all("class_type" in n for n in prompt.values()), p
    # data files of the examples (astronaut_lq.json: degradation parameters) live where nothing is scanned
    assert (ROOT / "example_inputs" / "astronaut_lq.json").is_file()


def test_the_scan_would_catch_a_misplaced_file(tmp_path, monkeypatch):
    """The helpers above really apply ComfyUI's rules: an examples/ folder shadows workflows/ and its JSON is listed."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "a.json").write_text("{}")
    assert served_folder() == tmp_path / "workflows" and [p.name for p in listed_templates()] == ["a.json"]
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "params.json").write_text("{}")
    assert served_folder() == tmp_path / "examples"
    assert [p.name for p in listed_templates()] == ["params.json", "a.json"]


def test_copy_examples_puts_the_files_the_workflows_name_into_input_and_never_overwrites(tmp_path):
    import subprocess

    tool = [sys.executable, str(ROOT / "tools" / "copy_examples.py"), "--input", str(tmp_path)]
    (tmp_path / "astronaut_ref.png").write_bytes(b"mine")
    out = subprocess.run(tool, capture_output=True, text=True, check=True).stdout
    assert out.count("copied") == 3 and (tmp_path / "astronaut_ref.png").read_bytes() == b"mine"
    named = {n["inputs"]["image"] for p in API.glob("*.json") for n in json.loads(p.read_text()).values()
             if n["class_type"] == "LoadImage"}
    folders = {n["inputs"]["folder"] for p in API.glob("*.json") for n in json.loads(p.read_text()).values()
               if n["class_type"] == "Face2SceneLoadGallery"}
    assert named and all((tmp_path / name).is_file() for name in named)
    assert folders and all(any((tmp_path / f).iterdir()) for f in folders)
    missing = subprocess.run(tool[:-1] + [str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "pass --input" in missing.stderr
