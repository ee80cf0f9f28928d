"""pytest fixtures for the ComfyUI test host. Import them by name into a test module.

* ``comfy_host`` (session): :class:`~.paths.HostPaths`, or skip when the host is not built.
* ``comfy_runtime`` (session): ComfyUI booted in this process (:func:`~.inprocess.boot`), its
  input/output/temp folders under a session temp dir.
* ``comfy_server`` (module): a running :class:`~.server_process.ComfyServer`, stopped after the module.
* ``comfy_browser`` (session): :class:`~.paths.BrowserPaths`, or skip when Chromium/chromedriver/selenium
  are missing.

Skips become failures when ``CI`` or ``FACE2SCENE_REQUIRE_COMFYUI`` is set: there the host must exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .inprocess import ComfyRuntime, boot
from .paths import BrowserPaths, HostNotBuiltError, HostPaths, find_browser, find_host
from .server_process import ComfyServer


def _missing(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("FACE2SCENE_REQUIRE_COMFYUI"):
        pytest.fail(f"{reason} (CI/FACE2SCENE_REQUIRE_COMFYUI is set, so this is an error, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def comfy_host() -> HostPaths:
    try:
        return find_host()
    except HostNotBuiltError as exc:
        _missing(str(exc))


@pytest.fixture(scope="session")
def comfy_runtime(comfy_host: HostPaths, tmp_path_factory: pytest.TempPathFactory) -> ComfyRuntime:
    return boot(comfy_host, work_dir=tmp_path_factory.mktemp("comfy_inprocess"))


@pytest.fixture(scope="module")
def comfy_server(comfy_host: HostPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    server = ComfyServer(tmp_path_factory.mktemp("comfy_server"), comfy_host)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def comfy_browser() -> BrowserPaths:
    try:
        return find_browser()
    except HostNotBuiltError as exc:
        _missing(str(exc))
