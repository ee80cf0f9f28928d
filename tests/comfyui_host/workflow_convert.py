"""Turn API-format workflows into UI-format (drag-and-drop) workflows with ComfyUI's own web UI.

The API format (``{node_id: {"class_type", "inputs"}}``) is what ``/prompt`` runs; the UI format (``nodes``,
``links``, positions, widget values) is what users drag into ComfyUI. Writing the UI format by hand is
error-prone (widget order, slot indices, sizes), so the page builds it: ``app.loadApiJson(api)`` creates the
nodes and links exactly as ComfyUI does when a user drops an API prompt, the nodes are laid out in columns by
their distance from the inputs, and ``app.graph.serialize()`` returns the UI workflow ComfyUI would save.

    cd tests && ../.venv/bin/python -m comfyui_host.workflow_convert ../workflows/api ../workflows

rebuilds every UI workflow ``workflows/<name>.json`` from the API workflow ``workflows/api/<name>.json`` (a server
with the pack is started for it).
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
const [colGap, rowGap, x0, y0, minWidth, maxHeight, imageSize, textSize] = arguments[1];
(async () => {
  const missing = Object.values(api).map(n => n.class_type).filter(t => !(t in LiteGraph.registered_node_types));
  if (missing.length) return {error: "unknown node types: " + [...new Set(missing)].join(", ")};
  app.loadApiJson(api);
  const nodes = app.graph._nodes;
  for (const node of nodes) {
    // room for the title, for the images that LoadImage / PreviewImage / SaveImage show once run (large enough
    // to read the previews), and for the text of Show Report
    const title = app.canvas.canvas.getContext("2d").measureText(node.title).width * 1.4 + 40;
    const big = ["PreviewImage", "SaveImage"].includes(node.type) ? imageSize
      : node.type === "LoadImage" ? [minWidth, 300] : node.type === "Face2SceneShowReport" ? textSize : [0, 0];
    node.size = [Math.max(node.size[0], minWidth, title, big[0]), Math.max(node.size[1], big[1])];
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
  // flow layout: nodes in data-flow order (depth, then id) fill columns top to bottom; a node that would make a
  // column taller than maxHeight starts the next one, so every input is left of or above the node it feeds and
  // the whole graph stays about as tall as a 1600x1000 window
  const order = [...nodes].sort((a, b) => depth[a.id] - depth[b.id] || (+a.id) - (+b.id));
  let x = x0, y = y0, width = 0;
  for (const node of order) {
    const h = node.size[1] + LiteGraph.NODE_TITLE_HEIGHT;
    if (y > y0 && y + h > y0 + maxHeight) {
      x += width + colGap;
      y = y0;
      width = 0;
    }
    node.pos = [x, y + LiteGraph.NODE_TITLE_HEIGHT];
    y += h + rowGap;
    width = Math.max(width, node.size[0]);
  }
  app.graph.setDirtyCanvas(true, true);
  return {workflow: app.graph.serialize()};
})().then(done, e => done({error: String(e && e.stack || e)}));
"""

LAYOUT = {"col_gap": 40, "row_gap": 20, "x0": 20, "y0": 20, "min_width": 300, "max_height": 900,
          "image_size": (400, 440), "text_size": (400, 260)}
"""Graph layout: column and row gaps, origin, minimum node width, the height a column may reach, the size of
image nodes (PreviewImage / SaveImage: the 512x648 FaDeX preview shows at ~3/4 scale) and of Show Report."""


def api_to_ui(ui: ComfyWebUI, api: dict, **layout: object) -> dict:
    """The UI-format workflow ComfyUI's page builds from the API prompt ``api`` (node ids are kept), laid out
    with :data:`LAYOUT` (keyword arguments override its entries).

    Raises:
        WebUIError: a node type is unknown to the server, or the page script failed.
    """
    if ui._driver is None:
        raise WebUIError("the browser is not open; use `with ComfyWebUI(url) as ui:`")
    unknown = set(layout) - set(LAYOUT)
    if unknown:
        raise ValueError(f"unknown layout option(s) {sorted(unknown)}; known: {sorted(LAYOUT)}")
    p = {**LAYOUT, **layout}
    args = [p["col_gap"], p["row_gap"], p["x0"], p["y0"], p["min_width"], p["max_height"], list(p["image_size"]),
            list(p["text_size"])]
    result = ui._driver.execute_async_script(_CONVERT_SCRIPT, api, args)
    if "error" in result:
        raise WebUIError(f"converting the API workflow failed: {result['error']}")
    return result["workflow"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("api_folder", type=Path, help="folder of API-format workflows (*.json)")
    parser.add_argument("ui_folder", type=Path, help="folder to write the UI-format workflows to, same names")
    args = parser.parse_args(argv)
    apis = sorted(args.api_folder.glob("*.json"))
    if not apis:
        print(f"no *.json in {args.api_folder}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="face2scene-convert-") as work, ComfyServer(work) as server, \
            ComfyWebUI(server.url) as ui:
        for path in apis:
            workflow = api_to_ui(ui, json.loads(path.read_text()))
            out = args.ui_folder / path.name
            out.write_text(json.dumps(workflow, indent=1) + "\n")
            print(f"{path} -> {out} ({len(workflow['nodes'])} nodes, {len(workflow['links'])} links)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
