"""Run ComfyUI's real HTTP server (``main.py``) in a child process and talk to it over HTTP.

The server runs with ``--cpu --listen 127.0.0.1 --port <free port>``, the host's
``--extra-model-paths-config`` (which registers the pack folder), and input/output/temp folders under
a work folder, so nothing is written into the ComfyUI checkout. Its stdout+stderr go to
``<work_dir>/comfyui.log``. Use it as a context manager; :meth:`ComfyServer.stop` always runs
(terminate, wait, kill).

Only the standard library is used for HTTP (``urllib``).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from .comfy_log import custom_node_import_errors, custom_node_imports
from .paths import HostPaths, find_host


class ServerError(RuntimeError):
    """The ComfyUI server did not start, died, or did not answer in time."""


@dataclass
class HttpResponse:
    """``status`` (HTTP code), ``body`` (bytes) and ``json`` (decoded body, or ``None`` if not JSON)."""

    status: int
    body: bytes
    json: object | None


@dataclass
class ServerRun:
    """A prompt run through the server.

    Attributes:
        prompt_id: id assigned by the server (``None`` when POST /prompt rejected the prompt).
        response: the POST /prompt response (400 with ``error`` and ``node_errors`` when invalid).
        history: the ``/history/<id>`` entry (``prompt``, ``outputs``, ``status``) or ``None``.
    """

    prompt_id: str | None
    response: HttpResponse
    history: dict | None

    @property
    def success(self) -> bool:
        return self.history is not None and self.history.get("status", {}).get("status_str") == "success"

    @property
    def error(self) -> dict | None:
        """The ``execution_error`` message from the history's status messages, if any."""
        for event, data in (self.history or {}).get("status", {}).get("messages", []):
            if event == "execution_error":
                return data
        return None

    def images(self, node_id: str) -> list[dict]:
        """``[{"filename", "subfolder", "type"}, ...]`` written by an image output node."""
        outputs = (self.history or {}).get("outputs", {})
        if str(node_id) not in outputs:
            raise KeyError(f"node {node_id!r} produced no output; nodes with output: {sorted(outputs)}")
        return outputs[str(node_id)].get("images", [])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """ComfyUI's ``main.py`` in a child process.

    Args:
        work_dir: receives ``input/``, ``output/``, ``temp/`` and ``comfyui.log``.
        host: the test host; default :func:`.paths.find_host`.
        python: interpreter to run ``main.py`` with; default the current one.
        port: default a free port.
        extra_args: more ``main.py`` arguments.
        startup_timeout: seconds to wait for ``/system_stats`` to answer (300: under a loaded 2-core CPU a start-up
            took over 90 s).
    """

    def __init__(
        self,
        work_dir: str | Path,
        host: HostPaths | None = None,
        *,
        python: str | Path = sys.executable,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 300.0,
    ) -> None:
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be > 0, got {startup_timeout}")
        self.host = host or find_host()
        self.work_dir = Path(work_dir)
        self.input_dir = self.work_dir / "input"
        self.output_dir = self.work_dir / "output"
        self.temp_dir = self.work_dir / "temp"
        self.log_path = self.work_dir / "comfyui.log"
        self.python = str(python)
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.startup_seconds: float | None = None
        self.client_id = f"face2scene-tests-{uuid.uuid4().hex[:8]}"
        self._proc: subprocess.Popen | None = None
        self._log_file: io.BufferedWriter | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- life cycle ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            self.python, str(self.host.main_py), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--extra-model-paths-config", str(self.host.extra_model_paths),
            "--input-directory", str(self.input_dir), "--output-directory", str(self.output_dir),
            "--temp-directory", str(self.work_dir), "--disable-auto-launch", *self.extra_args,
        ]  # fmt: skip

    def start(self) -> ComfyServer:
        """Start ``main.py`` and wait until ``/system_stats`` answers. On failure the process is stopped
        and :class:`ServerError` carries the end of its log."""
        if self._proc is not None:
            raise ServerError("server already started")
        for d in (self.input_dir, self.output_dir, self.temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        t0 = time.perf_counter()
        self._proc = subprocess.Popen(
            self.command(), cwd=str(self.host.comfyui), stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = t0 + self.startup_timeout
            while True:
                if self._proc.poll() is not None:
                    raise ServerError(f"ComfyUI exited with code {self._proc.returncode} during start-up:\n{self.log_tail()}")
                try:
                    if self.get("/system_stats", timeout=2).status == 200:
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    pass
                if time.perf_counter() > deadline:
                    raise ServerError(f"ComfyUI did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - t0
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout`` s). Returns its exit code."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=timeout)
            code = proc.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- log ----------------------------------------------------------------------------------
    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def custom_node_imports(self) -> dict[str, bool]:
        """``{custom node path: imported?}`` from the server's import-times table."""
        return custom_node_imports(self.log_text())

    def custom_node_errors(self) -> dict[str, str]:
        return custom_node_import_errors(self.log_text())

    # --- HTTP ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, payload: object | None = None, timeout: float = 30.0) -> HttpResponse:
        """One HTTP request; non-2xx answers are returned, not raised."""
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        try:
            decoded = json.loads(body) if body else None
        except ValueError:
            decoded = None
        return HttpResponse(status, body, decoded)

    def get(self, path: str, timeout: float = 30.0) -> HttpResponse:
        return self.request("GET", path, timeout=timeout)

    def post_prompt(self, prompt: dict) -> HttpResponse:
        """POST /prompt. 200 with ``prompt_id`` when queued; 400 with ``error`` and ``node_errors`` when
        validation failed (500 for an unknown node type in ComfyUI a28a9dc)."""
        return self.request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})

    def wait_history(self, prompt_id: str, timeout: float = 120.0) -> dict:
        """Poll ``/history/<prompt_id>`` until the prompt finished; returns its history entry."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            resp = self.get(f"/history/{prompt_id}")
            if resp.status == 200 and isinstance(resp.json, dict) and prompt_id in resp.json:
                return resp.json[prompt_id]
            if not self.running:
                raise ServerError(f"ComfyUI died while running prompt {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.1)
        raise ServerError(f"prompt {prompt_id} not finished after {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 120.0) -> ServerRun:
        """POST the prompt; when accepted, wait for it and return its history."""
        resp = self.post_prompt(prompt)
        if resp.status != 200:
            return ServerRun(None, resp, None)
        prompt_id = resp.json["prompt_id"]
        return ServerRun(prompt_id, resp, self.wait_history(prompt_id, timeout))

    def view(self, image: dict) -> bytes:
        """GET /view for one ``{"filename", "subfolder", "type"}`` entry; returns the file's bytes."""
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        resp = self.get(f"/view?{query}")
        if resp.status != 200:
            raise ServerError(f"/view?{query} answered {resp.status}: {resp.body[:200]!r}")
        return resp.body

    def object_info(self) -> dict:
        """GET /object_info: ``{node id: definition}`` for every registered node type."""
        resp = self.get("/object_info")
        if resp.status != 200:
            raise ServerError(f"/object_info answered {resp.status}")
        return resp.json
