"""Turn API-format workflows into UI-format (drag-and-drop) workflows with ComfyUI's own web UI.

The API format (``{node_id: {"class_type", "inputs"}}``) is what ``/prompt`` runs; the UI format (``nodes``,
``links``, positions, widget values) is what users drag into ComfyUI. Writing the UI format by hand is
error-prone (widget order, slot indices, sizes), so the page builds it: ``app.loadApiJson(api)`` creates the
nodes and links exactly as ComfyUI does when a user drops an API prompt, the nodes are laid out in columns by
their distance from the inputs, and ``app.graph.serialize()`` returns the UI workflow ComfyUI would save.

    cd tests && ../.venv/bin/python -m comfyui_host.workflow_convert ../workflows

rebuilds every ``*_ui.json`` of the folder from its ``*_api.json`` (a server with the pack is started for it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .server_process import ComfyServer
from .webui import ComfyWebUI, WebUIError

_CONVERT_SCRIPT = """
const done = arguments[arguments.length - 1];
const api = arguments[0];
const [colGap, rowGap, x0, y0, minWidth] = arguments[1];
(async () => {
  const missing = Object.values(api).map(n => n.class_type).filter(t => !(t in LiteGraph.registered_node_types));
  if (missing.length) return {error: "unknown node types: " + [...new Set(missing)].join(", ")};
  app.loadApiJson(api);
  const nodes = app.graph._nodes;
  for (const node of nodes) {
    // room for the title, and for the images that LoadImage / PreviewImage / SaveImage show once run
    const title = app.canvas.canvas.getContext("2d").measureText(node.title).width * 1.4 + 40;
    const image = ["LoadImage", "PreviewImage", "SaveImage"].includes(node.type) ? 300 : 0;
    node.size = [Math.max(node.size[0], minWidth, title), Math.max(node.size[1], image)];
  }
  const depth = {};
  const visit = (node) => {
    if (node.id in depth) return depth[node.id];
    depth[node.id] = 0;
    let d = 0;
    for (const input of node.inputs || []) {
      if (input.link == null) continue;
      const link = app.graph.links[input.link];
      d = Math.max(d, visit(app.graph.getNodeById(link.origin_id)) + 1);
    }
    return (depth[node.id] = d);
  };
  nodes.forEach(visit);
  const columns = {};
  for (const node of [...nodes].sort((a, b) => (+a.id) - (+b.id))) (columns[depth[node.id]] ||= []).push(node);
  let x = x0;
  for (const col of Object.keys(columns).map(Number).sort((a, b) => a - b)) {
    let y = y0, width = 0;
    for (const node of columns[col]) {
      node.pos = [x, y];
      y += node.size[1] + rowGap + LiteGraph.NODE_TITLE_HEIGHT;
      width = Math.max(width, node.size[0]);
    }
    x += width + colGap;
  }
  app.graph.setDirtyCanvas(true, true);
  return {workflow: app.graph.serialize()};
})().then(done, e => done({error: String(e && e.stack || e)}));
"""


def api_to_ui(ui: ComfyWebUI, api: dict, *, col_gap: int = 50, row_gap: int = 20, min_width: int = 300) -> dict:
    """The UI-format workflow ComfyUI's page builds from the API prompt ``api`` (node ids are kept).

    Raises:
        WebUIError: a node type is unknown to the server, or the page script failed.
    """
    if ui._driver is None:
        raise WebUIError("the browser is not open; use `with ComfyWebUI(url) as ui:`")
    result = ui._driver.execute_async_script(_CONVERT_SCRIPT, api, [col_gap, row_gap, 20, 40, min_width])
    if "error" in result:
        raise WebUIError(f"converting the API workflow failed: {result['error']}")
    return result["workflow"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of *_api.json workflows (writes *_ui.json beside them)")
    args = parser.parse_args(argv)
    apis = sorted(args.folder.glob("*_api.json"))
    if not apis:
        print(f"no *_api.json in {args.folder}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="face2scene-convert-") as work, ComfyServer(work) as server, \
            ComfyWebUI(server.url) as ui:
        for path in apis:
            workflow = api_to_ui(ui, json.loads(path.read_text()))
            out = path.with_name(path.name.replace("_api.json", "_ui.json"))
            out.write_text(json.dumps(workflow, indent=1) + "\n")
            print(f"{path.name} -> {out.name} ({len(workflow['nodes'])} nodes, {len(workflow['links'])} links)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
