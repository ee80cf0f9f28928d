// Face2Scene Show Report: a read-only text box in the node that shows the text the node received.
// Classic extension API (app.registerExtension), loaded by the 2024 web UI and the current frontend alike.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODE = "Face2SceneShowReport";
const WIDGET = "report_text";

app.registerExtension({
  name: "Face2Scene.ShowReport",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const widget = ComfyWidgets.STRING(this, WIDGET, ["STRING", { multiline: true }], app).widget;
      widget.serialize = false;  // a display, not an input: never saved in the workflow nor sent to /prompt
      widget.options = { ...(widget.options || {}), serialize: false };
      if (widget.inputEl) widget.inputEl.readOnly = true;
      widget.value = "Run the workflow: the report appears here.";
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const widget = this.widgets?.find((w) => w.name === WIDGET);
      if (widget) widget.value = (message?.text || []).join("\n");
    };
  },
});
