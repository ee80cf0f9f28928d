"""ComfyUI entry point of the Face2Scene node pack.

ComfyUI imports this folder as a package (its folder name becomes the module name, e.g. ``face2scene``)
and reads ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``. The registries live in
:mod:`.nodes`; this file only re-exports them. Only relative imports are used, so the pack works
whatever its folder is called, and importing it needs neither ComfyUI nor any side effect.

pytest also imports this file when it collects the repository root, and when the checkout's folder name is
not a valid module name (``tmp.x1y2``, ``ComfyUI-Face2Scene``) it does so as a top-level module with no
package: then there is nothing to register and the registries are empty.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # imported as a plain module (pytest collecting the repo root), not as a ComfyUI pack
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}

WEB_DIRECTORY = "./web"
"""Front-end extension of the pack (``web/show_report.js``: the text box of Face2Scene Show Report)."""

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
