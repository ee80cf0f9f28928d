"""Explicit registries of the Face2Scene ComfyUI nodes.

Each feature lives in its own module ``nodes/<feature>.py`` (thin glue: resolve inputs, call
``face2scene_core``, wrap outputs). To register a node, import its class here with a relative import
and add one entry to each dict below: node ids are stable and carry the ``Face2Scene`` prefix,
display names are what users read in the node menu. No folder scanning, no import side effects.
"""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
"""Node id (``"Face2Scene..."``) -> node class (classic ComfyUI node API)."""

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
"""Node id -> human-readable name shown in ComfyUI's menus."""

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
