"""Load a UI-format workflow into ComfyUI's web UI in headless Chromium and report what the UI saw.

Driver: selenium (PyPI) with Debian's ``chromium`` + ``chromium-driver``; both paths are given
explicitly, so Selenium Manager never tries to download a browser or a driver. Each call starts a
browser gets its own fresh ``--user-data-dir`` (no cached workflow or settings), deleted when it quits.

What is read back, from the page's own objects after ``await app.loadGraphData(workflow)``:
the node types the UI knows (``LiteGraph.registered_node_types``, filled from ``/object_info``), the
workflow's node types missing from it, the types ComfyUI's "node types were not found" dialog listed,
nodes LiteGraph could not create (``has_errors``), a load-error dialog if any, the API prompt the UI
would queue (``app.graphToPrompt()``), browser console errors, and a PNG screenshot.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .paths import BrowserPaths, find_browser

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)  # fmt: skip

_LOAD_SCRIPT = """
const done = arguments[arguments.length - 1];
const workflow = arguments[0];
const fit = arguments[1];
(async () => {
  const known = Object.keys(LiteGraph.registered_node_types);
  const missingBefore = [...new Set(workflow.nodes.map(n => n.type).filter(t => !(t in LiteGraph.registered_node_types)))];
  const dialogMissing = [];
  const original = app.showMissingNodesError;
  app.showMissingNodesError = function (types, ...rest) {
    for (const t of types) dialogMissing.push(typeof t === "object" ? t.type : t);
    return original.call(this, types, ...rest);
  };
  try {
    await app.loadGraphData(workflow);
  } finally {
    app.showMissingNodesError = original;
  }
  const dialog = app.ui.dialog.element;
  const dialogText = dialog && getComputedStyle(dialog).display !== "none" ? dialog.innerText : "";
  const nodes = app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title, has_errors: !!n.has_errors}));
  let apiPrompt = null, promptError = null;
  try { apiPrompt = (await app.graphToPrompt()).output; } catch (e) { promptError = String(e); }
  if (fit && app.graph._nodes.length) {
    // zoom and pan so the whole graph is in view (LiteGraph: screen = (pos + offset) * scale)
    const b = [Infinity, Infinity, -Infinity, -Infinity];
    for (const n of app.graph._nodes) {
      b[0] = Math.min(b[0], n.pos[0]); b[1] = Math.min(b[1], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT);
      b[2] = Math.max(b[2], n.pos[0] + n.size[0]); b[3] = Math.max(b[3], n.pos[1] + n.size[1]);
    }
    const canvas = app.canvas.canvas, margin = 30;
    const scale = Math.min(1, (canvas.width - 2 * margin) / (b[2] - b[0]), (canvas.height - 2 * margin) / (b[3] - b[1]));
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [margin / scale - b[0], margin / scale - b[1]];
  }
  const fitScale = app.canvas.ds.scale;
  app.graph.setDirtyCanvas(true, true);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return {known, missingBefore, dialogMissing, dialogText, nodes, links: Object.keys(app.graph.links || {}).length,
          apiPrompt, promptError, fitScale};
})().then(done, e => done({scriptError: String(e && e.stack || e)}));
"""

_QUEUE_SCRIPT = """
const done = arguments[arguments.length - 1];
const [nodeId, widgetName] = arguments;
(async () => {
  const node = app.graph.getNodeById(+nodeId);
  const widget = node && (node.widgets || []).find(w => w.name === widgetName);
  if (!widget) return {error: `node ${nodeId} has no widget ${widgetName}`};
  window.__face2sceneBefore = widget.value;
  await app.queuePrompt(0, 1);
  return {queued: true};
})().then(done, e => done({error: String(e && e.stack || e)}));
"""

_READ_SCRIPT = """
const node = app.graph.getNodeById(+arguments[0]);
const widget = node && (node.widgets || []).find(w => w.name === arguments[1]);
return widget && widget.value !== window.__face2sceneBefore ? {value: widget.value} : null;
"""


class WebUIError(RuntimeError):
    """The web UI did not load, or the workflow script failed in the page."""


@dataclass
class UIReport:
    """What ComfyUI's web UI made of a workflow.

    Attributes:
        registered_types: every node type the UI knows (``LiteGraph.registered_node_types``).
        graph_nodes: ``[{"id", "type", "title", "has_errors"}]`` of the loaded graph.
        unknown_types: workflow node types not registered in the UI (before loading).
        dialog_missing_types: types ComfyUI's missing-nodes dialog listed.
        dialog_text: text of a visible ComfyUI dialog after loading ("" when none).
        link_count: links in the loaded graph.
        api_prompt: the API-format prompt ``app.graphToPrompt()`` builds from the graph (or ``None``).
        prompt_error: the error ``graphToPrompt`` raised, if any.
        console_errors: SEVERE browser console messages.
        screenshot: PNG of the page after loading.
        seconds: load + screenshot time.
        fit_scale: the canvas zoom after loading (with ``fit``: the zoom at which the whole graph is in view).
    """

    registered_types: list[str]
    graph_nodes: list[dict]
    unknown_types: list[str]
    dialog_missing_types: list[str]
    dialog_text: str
    link_count: int
    api_prompt: dict | None
    prompt_error: str | None
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    seconds: float = 0.0
    fit_scale: float = 1.0

    @property
    def all_types_known(self) -> bool:
        """Every node of the workflow has a registered type and LiteGraph created it without error."""
        return not self.unknown_types and not self.dialog_missing_types and not any(n["has_errors"] for n in self.graph_nodes)


class ComfyWebUI:
    """A headless Chromium with ComfyUI's page open; load several workflows in one browser.

    Args:
        url: the ComfyUI server (``ComfyServer.url``).
        browser: default :func:`.paths.find_browser`.
        window_size: browser window in pixels.
        timeout: seconds for page set-up and for each workflow load.

    Use as a context manager (the browser quits on exit)::

        with ComfyWebUI(server.url) as ui:
            report = ui.load(workflow, tmp_path / "shot.png")
    """

    def __init__(self, url: str, *, browser: BrowserPaths | None = None,
                 window_size: tuple[int, int] = (1280, 800), timeout: float = 60.0) -> None:
        if min(window_size) <= 0 or timeout <= 0:
            raise ValueError(f"window_size and timeout must be positive, got {window_size}, {timeout}")
        self.url = url
        self.browser = browser or find_browser()
        self.window_size = window_size
        self.timeout = timeout
        self.startup_seconds: float | None = None
        self._driver = None
        self._profile: tempfile.TemporaryDirectory | None = None

    def open(self) -> ComfyWebUI:
        """Start Chromium, open the page and wait until ``window.app`` has registered its node types."""
        from selenium import webdriver
        from selenium.common.exceptions import TimeoutException, WebDriverException
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait

        t0 = time.perf_counter()
        self._profile = tempfile.TemporaryDirectory(prefix="face2scene-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(self.browser.chromium)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile.name}")
        options.add_argument(f"--window-size={self.window_size[0]},{self.window_size[1]}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=str(self.browser.chromedriver),
                          log_output=str(Path(self._profile.name) / "chromedriver.log"))
        try:
            self._driver = webdriver.Chrome(options=options, service=service)
            self._driver.set_script_timeout(self.timeout)
            self._driver.set_page_load_timeout(self.timeout)
            self._driver.get(self.url)
            WebDriverWait(self._driver, self.timeout, poll_frequency=0.1).until(
                lambda d: d.execute_script(
                    "return !!(window.app && window.app.graph && window.LiteGraph"
                    " && Object.keys(LiteGraph.registered_node_types).length > 0)"
                )
            )
        except TimeoutException:
            console = _console(self._driver)
            self.close()
            raise WebUIError(f"ComfyUI's web UI at {self.url} did not set up window.app within "
                             f"{self.timeout:.0f} s; console: {console}") from None
        except WebDriverException as exc:
            self.close()
            raise WebUIError(f"could not start Chromium or open {self.url}: {exc.msg}") from exc
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.perf_counter() - t0
        return self

    def close(self) -> None:
        """Quit the browser and delete its profile (safe to call twice)."""
        driver, self._driver = self._driver, None
        try:
            if driver is not None:
                driver.quit()
        finally:
            if self._profile is not None:
                self._profile.cleanup()
                self._profile = None

    def __enter__(self) -> ComfyWebUI:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self, workflow: dict, screenshot_path: str | Path, *, fit: bool = False) -> UIReport:
        """Load ``workflow`` (UI format: ``nodes``, ``links``...) into the page (replacing the current
        graph), save a PNG screenshot to ``screenshot_path`` and report what the UI saw. ``fit``: zoom
        and pan so the whole graph is in the screenshot (never zooms in beyond 1:1).

        Raises:
            ValueError: ``workflow`` is not UI format.
            WebUIError: the browser is not open, or the page script failed.
        """
        from selenium.common.exceptions import WebDriverException

        if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list) or "links" not in workflow:
            raise ValueError("workflow must be a UI-format workflow (a dict with 'nodes' and 'links'); got "
                             f"{type(workflow).__name__} with keys {sorted(workflow) if isinstance(workflow, dict) else '-'}")
        if self._driver is None:
            raise WebUIError("the browser is not open; use `with ComfyWebUI(url) as ui:` or call open()")
        t0 = time.perf_counter()
        screenshot_path = Path(screenshot_path)
        screenshot_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._driver.execute_script("app.ui.dialog.close()")  # a dialog left by a previous load
            result = self._driver.execute_async_script(_LOAD_SCRIPT, json.loads(json.dumps(workflow)), bool(fit))
            if not isinstance(result, dict) or "scriptError" in result:
                raise WebUIError(f"loading the workflow failed in the page: {result}; console: {_console(self._driver)}")
            if not self._driver.save_screenshot(str(screenshot_path)):
                raise WebUIError(f"could not save a screenshot to {screenshot_path}")
        except WebDriverException as exc:
            raise WebUIError(f"browser automation failed: {exc.msg}") from exc
        return UIReport(
            registered_types=sorted(result["known"]),
            graph_nodes=result["nodes"],
            unknown_types=result["missingBefore"],
            dialog_missing_types=result["dialogMissing"],
            dialog_text=result["dialogText"],
            link_count=int(result["links"]),
            api_prompt=result["apiPrompt"],
            prompt_error=result["promptError"],
            console_errors=_console(self._driver),
            screenshot=screenshot_path,
            seconds=time.perf_counter() - t0,
            fit_scale=float(result["fitScale"]),
        )

    def queue_and_read(self, node_id: str, widget: str, timeout: float = 300.0) -> str:
        """Queue the loaded graph from the page (as the Queue button does) and return the value of ``widget`` of
        node ``node_id`` once the run has changed it (e.g. the text box Face2Scene Show Report fills).

        Raises:
            WebUIError: the widget is missing or did not change within ``timeout`` seconds.
        """
        if self._driver is None:
            raise WebUIError("the browser is not open; use `with ComfyWebUI(url) as ui:` or call open()")
        result = self._driver.execute_async_script(_QUEUE_SCRIPT, str(node_id), widget)
        if "error" in result:
            raise WebUIError(f"{result['error']}; console: {_console(self._driver)}")
        deadline = time.perf_counter() + timeout
        while (result := self._driver.execute_script(_READ_SCRIPT, str(node_id), widget)) is None:
            if time.perf_counter() > deadline:
                raise WebUIError(f"widget {widget} of node {node_id} did not change within {timeout:.0f} s; "
                                 f"console: {_console(self._driver)}")
            time.sleep(0.5)
        return result["value"]


def load_workflow_in_ui(url: str, workflow: dict, screenshot_path: str | Path, **kwargs: object) -> UIReport:
    """One-shot :class:`ComfyWebUI`: open a browser, load ``workflow``, screenshot, quit.
    ``kwargs`` go to :class:`ComfyWebUI` (``browser``, ``window_size``, ``timeout``)."""
    with ComfyWebUI(url, **kwargs) as ui:
        return ui.load(workflow, screenshot_path)


def _console(driver: object) -> list[str]:
    """SEVERE console messages so far (an empty list when the driver cannot give them)."""
    try:
        return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    except Exception:  # noqa: BLE001 - diagnostics only; the caller's error is what matters
        return []
