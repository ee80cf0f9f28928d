"""Face2Scene Show Report: shows a text (the all-in-one node's JSON report) in the node itself.

The text goes to the page as the node's UI output (``{"text": [...]}``); ``web/show_report.js`` writes it into a
read-only text box of the node, in the 2024 web UI and the current frontend alike.
"""

from __future__ import annotations

from .types import CATEGORY


class Face2SceneShowReport:
    DESCRIPTION = ("Shows a text in the node once the workflow ran: connect the 'report' of Face2Scene Restore "
                   "(All-in-One) to read which face was used, why, and its identity scores.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = ("The same text, for other nodes.",)
    OUTPUT_NODE = True
    FUNCTION = "show"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True, "tooltip": "Text to show, e.g. the JSON "
                                                 "report of Face2Scene Restore (All-in-One)."})}}

    def show(self, text):
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        return {"ui": {"text": [text]}, "result": (text,)}
