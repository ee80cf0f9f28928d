"""Inputs, weights and workflows shared by the Face2Scene node and workflow tests.

* Real photos from ``../shared/datasets`` (``$FACE2SCENE_DATASETS`` as a fallback): a portrait with a clean
  reference photo of the same person (deepface identity p09), a small real old photo (CodeFormer's
  ``whole_imgs``), a group photo and a photo without any face.
* The embedded weights the loader node uses: ``face2scene_core/weights`` (shipped with the package), or the
  folder in ``$FACE2SCENE_EMBEDDED_WEIGHTS``; tests that need them skip, naming the missing file, when absent.
* The workflows of ``workflows/`` with their LoadImage / gallery inputs pointed at copies of those photos.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from face2scene_core.training.data import default_datasets_dir

from .paths import REPO_ROOT

DATASETS = default_datasets_dir()  # shared/datasets beside the checkout, $FACE2SCENE_DATASETS, or beside its origin

WORKFLOWS_DIR = REPO_ROOT / "workflows"
"""UI-format workflows (what ComfyUI's Template Browser lists), each with a same-name ``.jpg`` thumbnail."""
API_WORKFLOWS_DIR = WORKFLOWS_DIR / "api"
"""API-format workflows (``/prompt``), in a subfolder that ComfyUI does not list as templates."""
WORKFLOW_NAMES = ("staged", "all_in_one", "gallery", "face_preview", "no_tokens")
WEIGHTS_ENV = "FACE2SCENE_EMBEDDED_WEIGHTS"

_DEEPFACE = "faces_identity/deepface/tests/unit/dataset"
PORTRAIT = f"{_DEEPFACE}/img25.jpg"          # 400x400, identity deepface:p09
PORTRAIT_REF = f"{_DEEPFACE}/img24.jpg"      # 1200x1120, the same person
OLD_PHOTO = "faces_real/codeformer/inputs/whole_imgs/04.jpg"   # 225x225, real degraded portrait
GROUP = "faces_real/codeformer/inputs/whole_imgs/01.jpg"       # 248x189, four people
NO_FACE = "faces_real/ffdnet/testsets/RNI6/Building.png"       # 360x360 grey, no face
GALLERY = (OLD_PHOTO, GROUP, NO_FACE)                          # three sizes, one without a face
NO_FACE_CROP = (slice(100, 260), slice(100, 260))              # the gallery gets 160x160 of it (CPU time)

# the names the workflows' LoadImage nodes get in the tests (node "10": photo, "11": reference)
PHOTO_NAME, REFERENCE_NAME = "f2s_photo.png", "f2s_reference.jpg"
PHOTO_SIDE = 256
"""The portrait is given to the workflows downscaled (area filter) to 256x256 to keep CPU time low."""
GALLERY_FOLDER, REFERENCES_FOLDER = "face2scene_gallery", "face2scene_references"


def dataset(rel: str) -> Path:
    """Absolute path of a dataset file; ``FileNotFoundError`` naming the folder and the variable to set."""
    path = DATASETS / rel
    if not path.is_file():
        raise FileNotFoundError(f"dataset photo missing: {path} (put shared/datasets beside the repository or set "
                                "FACE2SCENE_DATASETS)")
    return path


def load_rgb(path: Path) -> np.ndarray:
    """An image file as ``uint8 (H, W, 3)`` the way ComfyUI's LoadImage reads it (EXIF-rotated, RGB)."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


PHOTO_NOISE_SIGMA = 15.0
"""...then given colour sensor noise (Gaussian, sigma 15 grey levels, seed 0): a photo that needs restoring. A clean
photo would (rightly) come back almost unchanged from the v3 model, and the tests could not tell a restore from none."""


def workflow_clean_photo() -> np.ndarray:
    """The portrait downscaled to ``uint8 (256, 256, 3)``: the ground truth of :func:`workflow_photo`."""
    with Image.open(dataset(PORTRAIT)) as im:
        return np.asarray(im.convert("RGB").resize((PHOTO_SIDE, PHOTO_SIDE), Image.Resampling.BOX))


def workflow_photo() -> np.ndarray:
    """The portrait as the workflows get it: ``uint8 (256, 256, 3)``, the clean one plus colour noise."""
    clean = workflow_clean_photo().astype(np.float64)
    noise = np.random.default_rng(0).normal(0.0, PHOTO_NOISE_SIGMA, clean.shape)
    return np.clip(np.round(clean + noise), 0, 255).astype(np.uint8)


def psnr_to_clean(image: np.ndarray) -> float:
    """PSNR (RGB, dB) of a 256x256 workflow output against :func:`workflow_clean_photo`."""
    err = np.mean((image.astype(np.float64) - workflow_clean_photo().astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(err, 1e-10)))


def weights_dir() -> Path:
    """The embedded weights the loader node will use."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else REPO_ROOT / "face2scene_core" / "weights"


def missing_weights() -> str | None:
    """Why the embedded weights cannot be used (a sentence naming the missing file), or ``None``."""
    root = weights_dir()
    for rel in ("fadex/config.json", "restorer.safetensors"):
        if not (root / rel).is_file():
            return f"embedded weights missing: {root / rel} (they ship with the package; ${WEIGHTS_ENV} overrides)"
    return None


def gallery_photos() -> list[tuple[str, np.ndarray]]:
    """``(file name, uint8 (H, W, 3))`` of the gallery folder :func:`prepare_inputs` writes (PNG, sorted)."""
    out = []
    for i, rel in enumerate(GALLERY):
        img = load_rgb(dataset(rel))
        out.append((f"{i:02d}_{Path(rel).stem}.png", img[NO_FACE_CROP] if rel == NO_FACE else img))
    return out


def prepare_inputs(input_dir: Path) -> None:
    """Copy the test photos into a ComfyUI input folder: the portrait and its reference under the names the
    tests give the LoadImage nodes, and the gallery and reference folders of the gallery workflow."""
    input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(workflow_photo()).save(input_dir / PHOTO_NAME)
    shutil.copy(dataset(PORTRAIT_REF), input_dir / REFERENCE_NAME)
    for folder in (GALLERY_FOLDER, REFERENCES_FOLDER):
        (input_dir / folder).mkdir(exist_ok=True)
    for name, img in gallery_photos():
        Image.fromarray(img).save(input_dir / GALLERY_FOLDER / name)
    for i, rel in enumerate((PORTRAIT_REF, OLD_PHOTO)):
        shutil.copy(dataset(rel), input_dir / REFERENCES_FOLDER / f"{i:02d}_{Path(rel).name}")


def api_workflow(name: str, *, test_inputs: bool = True) -> dict:
    """``workflows/api/face2scene_<name>.json``; with ``test_inputs`` its photo inputs point at
    :func:`prepare_inputs`' copies instead of the example files it names."""
    prompt = json.loads((API_WORKFLOWS_DIR / f"face2scene_{name}.json").read_text())
    for node_id, file in (("10", PHOTO_NAME), ("11", REFERENCE_NAME)):
        if test_inputs and node_id in prompt:
            prompt[node_id]["inputs"]["image"] = file
    return prompt


def execution_view(prompt: dict, object_info: dict) -> dict:
    """What of an API prompt matters to execution: ``{node id: (class_type, {input: value})}`` with only the inputs
    the node class declares (``object_info[class]["input"]``), so UI-only widget values that a frontend may or may
    not send (Load Image's ``"upload": "image"``) do not count."""
    out = {}
    for node_id, node in prompt.items():
        declared = object_info.get(node["class_type"], {}).get("input", {})
        names = {k for part in ("required", "optional") for k in declared.get(part, {})}
        out[str(node_id)] = (node["class_type"], {k: v for k, v in node["inputs"].items() if k in names})
    return out


def ui_workflow(name: str) -> dict:
    """``workflows/face2scene_<name>.json`` (UI format)."""
    return json.loads((WORKFLOWS_DIR / f"face2scene_{name}.json").read_text())


def write_sd15_header(path: Path) -> None:
    """A safetensors file whose header looks like an SD 1.x checkpoint (CLIP ViT-L text encoder,
    cross-attention 768): what SD-Turbo users pick by mistake. Tensors are zeros."""
    import torch
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
               "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 768),
               "first_stage_model.encoder.conv_in.weight": torch.zeros(128, 3, 3, 3),
               "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(8, 768)}, path)


TINY_SD_CHECKPOINT, TINY_SD_ADAPTER = "tiny_sd_turbo.safetensors", "tiny_sd_turbo_adapter.safetensors"


def build_tiny_sd_turbo(folder: Path) -> None:
    """A tiny SD-2.1-shaped model for the SD-Turbo backend, in ComfyUI's layout under ``folder``:
    ``checkpoints/tiny_sd_turbo.safetensors`` (single file, LDM keys, OpenCLIP text tower),
    ``face2scene/tiny_sd_turbo_adapter.safetensors`` (Face2Scene adapter: MapNet for the embedded FaDeX's
    features, random LoRA) and ``configs/`` (the tiny architecture's config folder, for ``load_sd_turbo``)."""
    import test_restorer as tr  # the restorer tests' diffusers -> LDM single-file converters
    import torch
    from safetensors.torch import save_file

    from face2scene_core.mapnet.model import MapNet
    from face2scene_core.restorer import sd_turbo as st

    feature_channels = json.loads((weights_dir() / "fadex" / "config.json").read_text())["channels"][-1]
    for sub in ("checkpoints", "face2scene"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    src = st.build_tiny_sd_like(folder / "configs", cross_attention_dim=64, seed=3)
    ckpt = {**tr._unet_to_ldm(src.unet), **tr._vae_to_ldm(src.vae),
            **tr._text_to_open_clip(src.text_encoder, "cond_stage_model.model.")}
    save_file(ckpt, folder / "checkpoints" / TINY_SD_CHECKPOINT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        mapnet = MapNet(in_channels=feature_channels, token_dim=64, mlp_hidden=32, num_heads=2)
        restorer = st.restorer_from_components(src, mapnet=mapnet)  # adds LoRA to src's UNet/VAE
        with torch.no_grad():
            for name, param in restorer.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.05)
    restorer.save_adapter(folder / "face2scene" / TINY_SD_ADAPTER)


def write_extra_model_paths(models: Path, path: Path) -> Path:
    """An ``extra_model_paths.yaml`` adding ``models/<kind>`` folders for a ComfyUI server."""
    lines = ["face2scene_tests:"] + [f"    {kind}: {models / kind}" for kind in
                                      ("checkpoints", "face2scene", "facerestore_models")]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class WorkflowCheck:
    """What a workflow must produce: ``{node id: expected size}`` of its saved/previewed images, where the
    size is ``"photo"`` (the input photo's), ``"face"`` (512x512 aligned faces) or ``"gallery"``."""

    images: dict[str, str]
    restored: tuple[str, ...]  # output nodes whose images must differ from the photo


CHECKS = {
    "staged": WorkflowCheck({"40": "photo", "41": "photo", "42": "panel"}, ("40",)),
    "all_in_one": WorkflowCheck({"40": "photo", "41": "face"}, ("40",)),
    "gallery": WorkflowCheck({"40": "gallery"}, ("40",)),
    "face_preview": WorkflowCheck({"41": "photo", "42": "face", "43": "face"}, ()),
    "no_tokens": WorkflowCheck({"40": "photo"}, ("40",)),
}


__all__ = [
    "API_WORKFLOWS_DIR", "CHECKS", "DATASETS", "GALLERY", "GALLERY_FOLDER", "GROUP", "NO_FACE", "NO_FACE_CROP", "OLD_PHOTO",
    "PHOTO_NAME", "PHOTO_SIDE", "PORTRAIT", "PORTRAIT_REF", "REFERENCES_FOLDER", "REFERENCE_NAME",
    "TINY_SD_ADAPTER", "TINY_SD_CHECKPOINT", "WEIGHTS_ENV", "WORKFLOWS_DIR", "WORKFLOW_NAMES", "WorkflowCheck",
    "api_workflow", "build_tiny_sd_turbo", "dataset", "execution_view", "gallery_photos", "load_rgb", "missing_weights",
    "prepare_inputs", "psnr_to_clean", "ui_workflow", "weights_dir", "workflow_clean_photo", "workflow_photo", "write_extra_model_paths", "write_sd15_header",
]
