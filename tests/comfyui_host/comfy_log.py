"""Reading ComfyUI's own log: which custom node packs its loader imported, and why one failed.

ComfyUI (a28a9dc and current) logs, after loading ``custom_nodes``::

    Import times for custom nodes:
       0.0 seconds: /path/custom_nodes/websocket_image_save.py
       0.1 seconds (IMPORT FAILED): /path/custom_nodes/broken_pack

and, for each failure, the traceback followed by
``Cannot import /path/custom_nodes/broken_pack module for custom nodes: <exception>``.
The same parser serves the in-process host (captured log records) and the server (its log file).
"""

from __future__ import annotations

import re

_IMPORT_LINE = re.compile(r"^\s*[\d.]+ seconds( \(IMPORT FAILED\))?: (.+?)\s*$", re.MULTILINE)
_CANNOT_IMPORT = re.compile(r"^Cannot import (.+?) module for custom nodes: (.*)$", re.MULTILINE)


def custom_node_imports(log_text: str) -> dict[str, bool]:
    """Map each custom node path in ``log_text``'s import-times table to ``True`` (imported) or ``False``."""
    return {m.group(2): m.group(1) is None for m in _IMPORT_LINE.finditer(log_text)}


def custom_node_import_errors(log_text: str) -> dict[str, str]:
    """Map each custom node path that failed to import to the exception text ComfyUI logged for it."""
    return {m.group(1): m.group(2) for m in _CANNOT_IMPORT.finditer(log_text)}
