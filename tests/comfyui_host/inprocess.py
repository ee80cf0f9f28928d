"""Run ComfyUI inside the current Python process: load the pack, validate and execute prompts.

Isolation decision
------------------
ComfyUI is a set of top-level modules (``nodes``, ``execution``, ``folder_paths``, ``server``,
``comfy``, ``comfy_extras``, ``app``, ``latent_preview``) that keep global state and cannot be
unloaded. :func:`boot` therefore runs at most once per process and keeps the runtime for the rest of
it; it puts the ComfyUI folder first on ``sys.path`` exactly as ``python main.py`` does. In the
pytest process this is safe because nothing in this project imports those names: ``face2scene_core``
never imports ComfyUI, and the repository's own ``nodes/`` package is only ever imported as a
sub-package of the pack (``ComfyUI-Face2Scene.nodes``). :func:`boot` refuses, with a message saying what to do,
when one of those names is already taken by another module. Tests that need a ComfyUI state of their
own (another pack folder, a different configuration) start a server process instead
(:mod:`.server_process`), which is the fully isolated path.

Inside the host the pack is the module ``ComfyUI-Face2Scene`` and its library is
``ComfyUI-Face2Scene.face2scene_core``:
classes from it (errors included) are not the same objects as those of a top-level
``import face2scene_core``. Compare errors by class name or message in host tests.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .comfy_log import custom_node_import_errors, custom_node_imports
from .paths import PACK_NAME, HostPaths, find_host

COMFY_MODULE_NAMES = ("nodes", "execution", "folder_paths", "server", "comfy", "comfy_extras", "app", "latent_preview")
TEST_CLIENT_ID = "face2scene-tests"

_RUNTIME: ComfyRuntime | None = None


class HostBootError(RuntimeError):
    """ComfyUI could not be started in this process."""


class ServerStub:
    """Stands in for ``server.PromptServer`` for ``execution.PromptExecutor``.

    Records every message the executor sends (``execution_start``, ``executing``, ``executed``,
    ``execution_error``, ``execution_cached``...) in :attr:`events` as ``(event, data)`` pairs.
    """

    def __init__(self) -> None:
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.events: list[tuple[str, dict]] = []

    def send_sync(self, event: str, data: dict, sid: str | None = None) -> None:
        self.events.append((event, data))


@dataclass
class Validation:
    """Result of ``execution.validate_prompt``.

    Attributes:
        ok: the prompt may run.
        error: ComfyUI's error dict (``type``, ``message``, ``details``, ``extra_info``) or ``None``.
        outputs: ids of the output nodes that will run.
        node_errors: ``{node_id: {"errors": [...], "dependent_outputs": [...], "class_type": str}}``.
    """

    ok: bool
    error: dict | None
    outputs: list[str]
    node_errors: dict

    @property
    def message(self) -> str | None:
        """The validation failure as one text, close to what ComfyUI's UI and HTTP API report."""
        if self.ok:
            return None
        lines = [f"{self.error['message']}: {self.error['details']}".rstrip(": ")] if self.error else []
        for node_id, info in self.node_errors.items():
            for err in info["errors"]:
                lines.append(f"{info['class_type']} (node {node_id}): {err['message']}: {err['details']}")
        return "\n".join(lines)


@dataclass
class ExecutionResult:
    """What one prompt did in the in-process host.

    Attributes:
        prompt_id: id passed to the executor.
        validation: the validation result (``ok=True`` with empty errors when validation was skipped).
        success: validated and every scheduled node ran without an exception.
        events: messages sent by the executor, in order (see :class:`ServerStub`).
        outputs_ui: ``{node_id: ui dict}`` as sent to the UI, e.g. ``{"images": [{"filename", "subfolder", "type"}]}``.
        outputs: ``{node_id: [slot values]}``, raw node outputs (each slot a list over list-mapped calls).
        seconds: wall time of validation + execution.
        output_dir, temp_dir: folders that ``type: output`` / ``type: temp`` files refer to.
    """

    prompt_id: str
    validation: Validation
    success: bool
    events: list[tuple[str, dict]] = field(default_factory=list)
    outputs_ui: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0
    output_dir: Path | None = None
    temp_dir: Path | None = None

    @property
    def error(self) -> dict | None:
        """The ``execution_error`` message (``node_id``, ``node_type``, ``exception_message``,
        ``exception_type``, ``traceback``...) or ``None``."""
        for event, data in self.events:
            if event == "execution_error":
                return data
        return None

    @property
    def error_message(self) -> str | None:
        """The failure as a user sees it: the validation message, or ComfyUI's
        ``Error occurred when executing <node>:\\n\\n<exception>`` text; ``None`` on success."""
        if not self.validation.ok:
            return self.validation.message
        err = self.error
        if err is None:
            return None
        return f"Error occurred when executing {err['node_type']}:\n\n{err['exception_message']}"

    def images(self, node_id: str) -> list[Path]:
        """Files written by an image output node (``SaveImage``, ``PreviewImage``...), in order."""
        ui = self.outputs_ui.get(str(node_id))
        if ui is None:
            raise KeyError(f"node {node_id!r} produced no UI output; nodes with output: {sorted(self.outputs_ui)}")
        roots = {"output": self.output_dir, "temp": self.temp_dir}
        return [roots[img["type"]] / img["subfolder"] / img["filename"] for img in ui.get("images", [])]

    def output(self, node_id: str, slot: int = 0) -> Any:
        """Raw value of output ``slot`` of ``node_id`` (unwrapped when the node ran once)."""
        values = self.outputs[str(node_id)][slot]
        return values[0] if isinstance(values, list) and len(values) == 1 else values


class ComfyRuntime:
    """ComfyUI booted in this process (see :func:`boot`). Not thread-safe; one prompt at a time."""

    def __init__(self, host: HostPaths, modules: dict[str, ModuleType], boot_log: str, boot_seconds: float) -> None:
        self.host = host
        self.nodes = modules["nodes"]
        self.execution = modules["execution"]
        self.folder_paths = modules["folder_paths"]
        self.model_management = modules["model_management"]
        self.boot_log = boot_log
        self.boot_seconds = boot_seconds
        self.custom_node_imports: dict[str, bool] = custom_node_imports(boot_log)
        self.custom_node_errors: dict[str, str] = custom_node_import_errors(boot_log)
        self.progress_events: list[tuple[int, int]] = []
        self._server = ServerStub()
        self._executor = self.execution.PromptExecutor(self._server)

    # --- the pack ---------------------------------------------------------------------------
    @property
    def pack_loaded(self) -> bool:
        """ComfyUI's loader imported the pack (``custom_nodes/ComfyUI-Face2Scene``) without error."""
        return self.custom_node_imports.get(str(self.host.pack_dir)) is True

    @property
    def pack_module(self) -> ModuleType:
        """The pack's module as ComfyUI imported it (``sys.modules["ComfyUI-Face2Scene"]``)."""
        if PACK_NAME not in sys.modules:
            raise HostBootError(f"pack not imported; ComfyUI's log says: {self.custom_node_errors or self.boot_log[-2000:]}")
        return sys.modules[PACK_NAME]

    def load_custom_node(self, path: str | Path) -> tuple[bool, str]:
        """Import one more custom node file/folder with ComfyUI's own loader.

        Registers its nodes into the global ``nodes.NODE_CLASS_MAPPINGS`` (for the rest of the process).
        Returns ``(ok, log)`` where ``log`` is what ComfyUI logged while importing it.
        """
        with _capture_log() as records:
            ok = self.nodes.load_custom_node(str(path))
        return bool(ok), "\n".join(records)

    # --- folders ----------------------------------------------------------------------------
    def set_io_dirs(self, input_dir: str | Path, output_dir: str | Path, temp_dir: str | Path | None = None) -> None:
        """Point ComfyUI's input/output/temp folders somewhere (created if missing)."""
        input_dir, output_dir = Path(input_dir), Path(output_dir)
        temp_dir = Path(temp_dir) if temp_dir is not None else output_dir.parent / "temp"
        for d in (input_dir, output_dir, temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.folder_paths.set_input_directory(str(input_dir))
        self.folder_paths.set_output_directory(str(output_dir))
        self.folder_paths.set_temp_directory(str(temp_dir))

    @property
    def input_dir(self) -> Path:
        return Path(self.folder_paths.get_input_directory())

    @property
    def output_dir(self) -> Path:
        return Path(self.folder_paths.get_output_directory())

    @property
    def temp_dir(self) -> Path:
        return Path(self.folder_paths.get_temp_directory())

    # --- nodes ------------------------------------------------------------------------------
    def node_class(self, name: str) -> type:
        """The class registered as node id ``name``. KeyError lists the pack's node ids when missing."""
        try:
            return self.nodes.NODE_CLASS_MAPPINGS[name]
        except KeyError:
            ours = sorted(getattr(sys.modules.get(PACK_NAME), "NODE_CLASS_MAPPINGS", {}) or {})
            raise KeyError(f"node type {name!r} is not registered; the pack registers {ours}") from None

    def call_node(self, name: str, **inputs: Any) -> tuple:
        """Instantiate node ``name`` and call its ``FUNCTION`` with ``inputs``, as the executor does for a
        single (non-list) call, under ``torch.inference_mode()``. Returns the node's return value."""
        import torch

        cls = self.node_class(name)
        with torch.inference_mode():
            return getattr(cls(), cls.FUNCTION)(**inputs)

    # --- prompts ----------------------------------------------------------------------------
    def validate(self, prompt: dict) -> Validation:
        """``execution.validate_prompt(prompt)``; an unknown ``class_type`` (a KeyError in ComfyUI a28a9dc,
        an HTTP 500 from its server) is reported here as a ``missing_node_type`` error instead."""
        unknown = {nid: n.get("class_type") for nid, n in prompt.items() if n.get("class_type") not in self.nodes.NODE_CLASS_MAPPINGS}
        if unknown:
            node_errors = {
                nid: {
                    "errors": [{"type": "missing_node_type", "message": "Node type not found", "details": f"{ct!r}", "extra_info": {}}],
                    "dependent_outputs": [],
                    "class_type": ct,
                }
                for nid, ct in unknown.items()
            }
            error = {
                "type": "missing_node_type",
                "message": "Prompt uses node types that are not installed",
                "details": ", ".join(sorted({str(ct) for ct in unknown.values()})),
                "extra_info": {},
            }
            return Validation(False, error, [], node_errors)
        ok, error, outputs, node_errors = self.execution.validate_prompt(prompt)
        return Validation(bool(ok), error, list(outputs), node_errors)

    def execute(self, prompt: dict, *, validate: bool = True, keep_cache: bool = False, prompt_id: str | None = None) -> ExecutionResult:
        """Validate and execute an API-format prompt (``{node_id: {"class_type", "inputs"}}``).

        Args:
            prompt: the API-format prompt; node ids are strings.
            validate: run ``validate_prompt`` first (as the server does); when ``False`` every
                ``OUTPUT_NODE`` of the prompt is executed unvalidated.
            keep_cache: keep the executor's cached node outputs from earlier prompts (the server's
                behaviour); by default every call starts from an empty cache.
            prompt_id: default a fresh uuid.

        Returns:
            :class:`ExecutionResult`; a failure is reported there, never raised.
        """
        prompt_id = prompt_id or str(uuid.uuid4())
        t0 = time.perf_counter()
        if validate:
            validation = self.validate(prompt)
            if not validation.ok:
                return ExecutionResult(prompt_id, validation, False, seconds=time.perf_counter() - t0,
                                       output_dir=self.output_dir, temp_dir=self.temp_dir)
        else:
            outputs = [nid for nid, n in prompt.items() if getattr(self.node_class(n["class_type"]), "OUTPUT_NODE", False)]
            validation = Validation(True, None, outputs, {})
        if not keep_cache:
            self._executor.reset()
        self._server.events = []
        self.progress_events.clear()
        self._executor.execute(prompt, prompt_id, {"client_id": TEST_CLIENT_ID}, validation.outputs)
        return ExecutionResult(
            prompt_id=prompt_id,
            validation=validation,
            success=bool(self._executor.success),
            events=list(self._server.events),
            outputs_ui=dict(self._executor.outputs_ui),
            outputs=dict(self._executor.outputs),
            seconds=time.perf_counter() - t0,
            output_dir=self.output_dir,
            temp_dir=self.temp_dir,
        )


class _capture_log:
    """Collect root-logger records (INFO and up) while the block runs; yields the list of messages."""

    def __enter__(self) -> list[str]:
        self.records: list[str] = []
        outer = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                outer.records.append(record.getMessage())

        self.handler = _Handler(level=logging.INFO)
        self.root = logging.getLogger()
        self.old_level = self.root.level
        self.root.addHandler(self.handler)
        self.root.setLevel(logging.INFO)
        return self.records

    def __exit__(self, *exc: object) -> None:
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.old_level)


def boot(host: HostPaths | None = None, *, work_dir: str | Path) -> ComfyRuntime:
    """Start ComfyUI (CPU only) in this process, load every custom node (the pack included) with
    ComfyUI's own loader, and point its input/output/temp folders under ``work_dir``.

    Idempotent: later calls return the same runtime (only the folders are re-pointed to ``work_dir``).

    Args:
        host: the test host; default :func:`.paths.find_host`.
        work_dir: folder that receives ``input/``, ``output/`` and ``temp/``.

    Raises:
        HostNotBuiltError: the host is not built.
        HostBootError: another module already owns one of ComfyUI's top-level names, or a second
            boot asks for a different host.
    """
    global _RUNTIME
    host = host or find_host()
    work_dir = Path(work_dir)
    if _RUNTIME is not None:
        if _RUNTIME.host.comfyui != host.comfyui:
            raise HostBootError(f"ComfyUI from {_RUNTIME.host.comfyui} is already running in this process; "
                                f"start a server process for {host.comfyui} instead.")
        _RUNTIME.set_io_dirs(work_dir / "input", work_dir / "output", work_dir / "temp")
        return _RUNTIME

    comfy_dir = str(host.comfyui)
    for name in COMFY_MODULE_NAMES:
        mod = sys.modules.get(name)
        origin = getattr(mod, "__file__", None) or next(iter(getattr(mod, "__path__", []) or []), None)
        if mod is not None and not (origin and str(origin).startswith(comfy_dir)):
            raise HostBootError(
                f"module name {name!r} is already taken by {origin!r}, so ComfyUI's own {name!r} cannot be "
                "imported in this process. Do not import the repository's 'nodes' package as a top-level "
                "module (the pack is loaded by ComfyUI as 'ComfyUI-Face2Scene'); or run this test against a "
                "ComfyServer process."
            )

    t0 = time.perf_counter()
    if comfy_dir not in sys.path:
        sys.path.insert(0, comfy_dir)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # must precede comfy.model_management
    comfy.cli_args.args.disable_auto_launch = True
    import comfy.model_management
    import comfy.utils
    import execution
    import folder_paths
    import nodes

    folder_paths.add_model_folder_path("custom_nodes", str(host.custom_nodes))
    with _capture_log() as records:
        nodes.init_custom_nodes()  # comfy_extras + every custom_nodes folder, via ComfyUI's loader

    def progress_hook(value: int, total: int, preview: object) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if _RUNTIME is not None:
            _RUNTIME.progress_events.append((value, total))

    comfy.utils.set_progress_bar_global_hook(progress_hook)
    runtime = ComfyRuntime(
        host,
        {"nodes": nodes, "execution": execution, "folder_paths": folder_paths, "model_management": comfy.model_management},
        boot_log="\n".join(records),
        boot_seconds=time.perf_counter() - t0,
    )
    runtime.set_io_dirs(work_dir / "input", work_dir / "output", work_dir / "temp")
    _RUNTIME = runtime
    return runtime
