"""Explicit registries of the Face2Scene ComfyUI nodes.

Each feature lives in its own module ``nodes/<feature>.py`` (thin glue: resolve inputs, call
``face2scene_core``, wrap outputs). To register a node, import its class here with a relative import
and add one entry to each dict below: node ids are stable and carry the ``Face2Scene`` prefix,
display names are what users read in the node menu. No folder scanning.

The one side effect of importing the pack inside ComfyUI is registering its model folders with
``folder_paths`` (:func:`.folders.register_model_folders`, the documented way); outside ComfyUI nothing happens.
"""

from .codes import Face2SceneLoadDegradation, Face2SceneSaveDegradation
from .degradation import Face2SceneDegradationTokens, Face2SceneExtractDegradation
from .faces import Face2SceneDetectFaces
from .folders import register_model_folders
from .gallery import Face2SceneLoadGallery, Face2SceneSaveGallery
from .loader import Face2SceneModelLoader
from .reffr import Face2SceneRefFR
from .report import Face2SceneShowReport
from .restore import Face2SceneOneStepRestore, Face2SceneRestore

register_model_folders()

NODE_CLASS_MAPPINGS: dict[str, type] = {
    "Face2SceneModelLoader": Face2SceneModelLoader,
    "Face2SceneDetectFaces": Face2SceneDetectFaces,
    "Face2SceneRefFR": Face2SceneRefFR,
    "Face2SceneExtractDegradation": Face2SceneExtractDegradation,
    "Face2SceneDegradationTokens": Face2SceneDegradationTokens,
    "Face2SceneOneStepRestore": Face2SceneOneStepRestore,
    "Face2SceneRestore": Face2SceneRestore,
    "Face2SceneLoadGallery": Face2SceneLoadGallery,
    "Face2SceneSaveGallery": Face2SceneSaveGallery,
    "Face2SceneShowReport": Face2SceneShowReport,
    "Face2SceneSaveDegradation": Face2SceneSaveDegradation,
    "Face2SceneLoadDegradation": Face2SceneLoadDegradation,
}
"""Node id (``"Face2Scene..."``) -> node class (classic ComfyUI node API)."""

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "Face2SceneModelLoader": "Face2Scene Model Loader",
    "Face2SceneDetectFaces": "Face2Scene Detect & Align Faces",
    "Face2SceneRefFR": "Face2Scene Ref-FR (Restore Face)",
    "Face2SceneExtractDegradation": "Face2Scene Extract Degradation (FaDeX)",
    "Face2SceneDegradationTokens": "Face2Scene Degradation Tokens (MapNet)",
    "Face2SceneOneStepRestore": "Face2Scene One-Step Restore",
    "Face2SceneRestore": "Face2Scene Restore (All-in-One)",
    "Face2SceneLoadGallery": "Face2Scene Load Gallery",
    "Face2SceneSaveGallery": "Face2Scene Save Gallery",
    "Face2SceneShowReport": "Face2Scene Show Report",
    "Face2SceneSaveDegradation": "Face2Scene Save Degradation",
    "Face2SceneLoadDegradation": "Face2Scene Load Degradation",
}
"""Node id -> human-readable name shown in ComfyUI's menus."""

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
