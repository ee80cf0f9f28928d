"""ComfyUI entry point of the Face2Scene node pack.

ComfyUI imports this folder as a package (its folder name becomes the module name, e.g. ``face2scene``)
and reads ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``. The registries live in
:mod:`.nodes`; this file only re-exports them. Only relative imports are used, so the pack works
whatever its folder is called, and importing it needs neither ComfyUI nor any side effect.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
