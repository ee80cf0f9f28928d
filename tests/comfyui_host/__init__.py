"""Real-ComfyUI test host for the Face2Scene node pack.

Build it once with ``.ci/setup_comfyui.sh .venv/bin/python`` (``scripts/test.sh`` does). Then:

* in-process (:mod:`.inprocess`): ComfyUI booted once per test process (fixture ``comfy_runtime``);
  ``runtime.execute(api_prompt)`` validates and runs a prompt in milliseconds and returns outputs,
  written files and the error message a user would see; ``runtime.node_class(id)`` /
  ``runtime.call_node(id, **inputs)`` reach a node directly. See that module for why in-process is safe.
* server (:mod:`.server_process`): ComfyUI's ``main.py`` in a child process (fixture ``comfy_server``,
  one per test module): POST /prompt, /history, /view, /object_info, and its log.
* web UI (:mod:`.webui`): headless Chromium loads a UI-format workflow into the server's page and
  reports unknown node types, the API prompt the UI builds, and a screenshot.

Test modules import the fixtures explicitly::

    from comfyui_host.fixtures import comfy_host, comfy_runtime, comfy_server  # noqa: F401

(``tests/`` is on ``sys.path`` under pytest's default import mode because ``tests/`` has no
``__init__.py``.) Without a built host every fixture skips with the setup command in the reason,
unless ``CI`` or ``FACE2SCENE_REQUIRE_COMFYUI`` is set, where it fails instead.
"""

from .comfy_log import custom_node_import_errors, custom_node_imports
from .inprocess import ComfyRuntime, ExecutionResult, HostBootError, Validation, boot
from .paths import PACK_NAME, REPO_ROOT, BrowserPaths, HostNotBuiltError, HostPaths, find_browser, find_host
from .server_process import ComfyServer, ServerError, ServerRun
from .webui import ComfyWebUI, UIReport, WebUIError, load_workflow_in_ui

DATA_DIR = REPO_ROOT / "tests" / "comfyui_host" / "data"

__all__ = [
    "DATA_DIR", "PACK_NAME", "REPO_ROOT",
    "BrowserPaths", "ComfyRuntime", "ComfyWebUI", "ComfyServer", "ExecutionResult", "HostBootError", "HostNotBuiltError",
    "HostPaths", "ServerError", "ServerRun", "UIReport", "Validation", "WebUIError",
    "boot", "custom_node_import_errors", "custom_node_imports", "find_browser", "find_host", "load_workflow_in_ui",
]  # fmt: skip
