"""Face2Scene One-Step Restore (the whole photo, conditioned on degradation tokens) and Restore (All-in-One)."""

from __future__ import annotations

import hashlib
import json

import torch

from .degradation import degradation_tokens, extract_degradation
from .faces import (REFERENCE_FILES_TOOLTIP, REFERENCES_TOOLTIP, detect_faces, make_detector, make_embedder,
                    prepare_references, reference_names)
from .images import from_chw, to_arrays, to_chw, to_image
from .reffr import face_model_with_patcher, faces_image, restore_faces
from .types import CATEGORY, FACES, FILES, MODEL, TOKENS, Faces, Tokens

COLOR_FIXES = ("wavelet", "adain", "none")
CFG_DEFAULT, CFG_MIN, CFG_MAX = 1.07, 1.0, 1.2
REFFR_CHOICES = ("embedded", "model file")
FACE_CHECK_TOOLTIP = ("Do no harm: scale the correction of the whole photo by how far it agrees, on the face, with the "
                      "Ref-FR face (a clean or mildly degraded photo is then left nearly alone). Needs faces and "
                      "restored_faces connected; without them, or without tokens, nothing is checked.")


def restore_images(model, image: torch.Tensor, tokens: Tokens | None = None, *, cfg_scale: float = CFG_DEFAULT,
                   tile_size: int = 0, tile_overlap: int = 64, color_fix: str = "wavelet",
                   paste: tuple[Faces, list] | None = None, check: tuple[Faces, list] | None = None,
                   verdicts: list | None = None) -> torch.Tensor:
    """The one-step restorer on every image of an IMAGE batch, with a ComfyUI progress bar.

    Args:
        model: ``Face2SceneModel``.
        image: IMAGE ``[B, H, W, 3]`` in ``[0, 1]``.
        tokens: degradation tokens (one entry per image, or one for all); ``None`` = no tokens (ablation).
        cfg_scale: guidance between the positive and negative prompt, ``[1.0, 1.2]`` (1.07, S3Diff's value).
        tile_size: ``0`` = whole image; else the side in pixels of the latent tiles (large images, GPU memory).
        tile_overlap: overlap of the tiles in pixels (at most half a tile).
        color_fix: ``"wavelet"``, ``"adain"`` or ``"none"`` (colour taken from the input).
        paste: ``(faces, restored aligned faces)``: paste each Ref-FR face back with a feathered mask.
        check: ``(faces, restored aligned faces)``: the face check (:mod:`face2scene_core.face_check`) on every
            image that has a face, a Ref-FR face and tokens: its correction is scaled by how far the face agrees.
        verdicts: if given, one entry per image is appended: the face check's report dict, or why it was skipped.

    Returns:
        IMAGE ``[B, H, W, 3]``, the input's size.
    """
    import comfy.utils

    from ..face2scene_core.faces.align import paste_back

    if not CFG_MIN <= cfg_scale <= CFG_MAX:
        raise ValueError(f"cfg_scale must be in [{CFG_MIN}, {CFG_MAX}], got {cfg_scale}")
    if color_fix not in COLOR_FIXES:
        raise ValueError(f"color_fix must be one of {COLOR_FIXES}, got {color_fix!r}")
    x = to_chw(image)
    batch = x.shape[0]
    per_image = tokens.for_batch(batch) if tokens is not None else [None] * batch
    for what, given in (("paste_face", paste), ("face_check", check)):
        if given is not None:
            faces = given[0]
            if len(faces) != batch or any(e.photo.shape[:2] != tuple(x.shape[-2:]) for e in faces.entries):
                raise ValueError(f"{what}: the faces were detected on {len(faces)} photo(s) of another size than "
                                 f"this {batch}-image batch; connect the faces made from this image")
    restorer = model.restorer()
    bar = comfy.utils.ProgressBar(batch)
    out = []
    for i in range(batch):
        t = per_image[i]
        y = restorer.restore(x[i:i + 1].to(model.device), None if t is None else t.to(model.device),
                             cfg_scale=cfg_scale, tile_size=tile_size or None,
                             tile_overlap=tile_overlap if tile_size else None,
                             color_fix=None if color_fix == "none" else color_fix, progress=False)
        y = from_chw(y)
        if check is not None:
            y = _checked(image[i:i + 1], y, check[0].entries[i], check[1][i], t, verdicts)
        if paste is not None and paste[1][i] is not None:
            pasted = paste_back(to_arrays(y)[0], paste[1][i], paste[0].entries[i].aligned)
            y = to_image([pasted])
        out.append(y)
        bar.update(1)
    return torch.cat(out)


def _checked(image: torch.Tensor, y: torch.Tensor, entry, hq, tokens, verdicts: list | None) -> torch.Tensor:
    """One image through the face check (``image`` and ``y``: IMAGE ``[1, H, W, 3]``); the blend is done in float, so
    a strength of 1 returns ``y`` unchanged."""
    from ..face2scene_core.face_check import face_check

    why = ("no face" if not entry.has_face or hq is None else
           "restored without degradation tokens" if tokens is None else None)
    if why is not None:
        if verdicts is not None:
            verdicts.append(f"not applied: {why}")
        return y
    verdict = face_check(entry.photo, to_arrays(y)[0], entry.aligned, hq)
    if verdicts is not None:
        verdicts.append(verdict.as_report())
    if verdict.strength >= 1.0:
        return y
    x = image.to(y.device, y.dtype)
    return (x + verdict.strength * (y - x)).clamp(0.0, 1.0)


class Face2SceneOneStepRestore:
    DESCRIPTION = ("Restores the whole photo (face, body, background) in one diffusion step, conditioned on the "
                   "degradation tokens read from the face. Without tokens it is the paper's no-token ablation. "
                   "Works on IMAGE batches.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("Restored photo(s), same size as the input.",)
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "From Face2Scene Model Loader."}),
                "image": ("IMAGE", {"tooltip": "The degraded photo(s)."}),
                "cfg_scale": ("FLOAT", {"default": CFG_DEFAULT, "min": CFG_MIN, "max": CFG_MAX, "step": 0.01,
                              "tooltip": "Guidance away from the negative prompt (blur, low quality...). 1.0 = off."}),
                "tile_size": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 64, "tooltip": "0: the whole image "
                              "at once. Otherwise tiles of this many pixels, blended (large photos, less memory)."}),
                "tile_overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 8,
                                 "tooltip": "Overlap of neighbouring tiles in pixels (at most half a tile)."}),
                "color_fix": (list(COLOR_FIXES), {"default": "wavelet", "tooltip": "Take the colours from the "
                              "input (wavelet: low frequencies; adain: channel mean/std) to avoid colour shifts."}),
                "paste_face": ("BOOLEAN", {"default": False, "tooltip": "Paste the Ref-FR face back over the "
                               "restored photo (needs faces and restored_faces)."}),
            },
            "optional": {
                "tokens": (TOKENS, {"tooltip": "Degradation tokens; leave empty to restore without them."}),
                "faces": (FACES, {"tooltip": "For paste_face and face_check: the faces detected on this image."}),
                "restored_faces": ("IMAGE", {"tooltip": "For paste_face and face_check: the Ref-FR faces."}),
                "face_check": ("BOOLEAN", {"default": True, "tooltip": FACE_CHECK_TOOLTIP}),
            },
        }

    def restore(self, model, image, cfg_scale, tile_size, tile_overlap, color_fix, paste_face, tokens=None,
                faces=None, restored_faces=None, face_check=True):
        pair = None
        if faces is not None and restored_faces is not None:
            hq = to_arrays(restored_faces, "restored_faces")
            pair = (faces, [h if e.has_face else None for h, e in zip(hq, faces.entries)])
        if paste_face and pair is None:
            raise ValueError("paste_face needs the faces and restored_faces inputs connected")
        return (restore_images(model, image, tokens, cfg_scale=cfg_scale, tile_size=tile_size,
                               tile_overlap=tile_overlap, color_fix=color_fix, paste=pair if paste_face else None,
                               check=pair if face_check else None),)


def report(faces: Faces, model, checks: list | None = None) -> str:
    """JSON report of what the all-in-one node did, per image (``checks``: the face check's verdicts)."""
    items = []
    for n, e in enumerate(faces.entries):
        items.append({"image": n, "size": [int(e.photo.shape[1]), int(e.photo.shape[0])], "faces": len(e.faces),
                      "face_used": e.chosen, "reason": e.reason, "identity_scores": e.identity_scores,
                      "degradation_tokens": e.has_face})
        if checks is not None:
            items[-1]["face_check"] = checks[n]
    return json.dumps({"model": repr(model), "references": len(faces.references), "images": items}, indent=1)


class Face2SceneRestore:
    DESCRIPTION = ("The whole Face2Scene pipeline in one node: detect and align the face, restore it with Ref-FR, "
                   "read the degradation with FaDeX, make the tokens with MapNet and restore the whole photo.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("image", "restored_faces", "report")
    OUTPUT_TOOLTIPS = ("Restored photo(s), same size as the input.", "The Ref-FR faces (aligned, 512x512).",
                       "JSON: faces found, face used and why, identity scores.")
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls):
        from .faces import Face2SceneDetectFaces
        from .reffr import Face2SceneRefFR

        detect = Face2SceneDetectFaces.INPUT_TYPES()["required"]
        stages = Face2SceneOneStepRestore.INPUT_TYPES()["required"]
        reffr = Face2SceneRefFR.INPUT_TYPES()["required"]
        return {
            "required": {
                "model": stages["model"], "image": stages["image"],
                **{k: detect[k] for k in ("face", "index", "detector", "min_face_size", "if_no_face")},
                "reffr": (list(REFFR_CHOICES), {"default": "embedded", "tooltip": "Face restorer: the embedded "
                          "Ref-FR (uses the references) or face_model below."}),
                "face_model": reffr["face_model"],
                **{k: stages[k] for k in ("cfg_scale", "tile_size", "tile_overlap", "color_fix", "paste_face")},
            },
            "optional": {"references": ("IMAGE", {"tooltip": REFERENCES_TOOLTIP}),
                         "reference_files": (FILES, {"tooltip": REFERENCE_FILES_TOOLTIP}),
                         "face_check": Face2SceneOneStepRestore.INPUT_TYPES()["optional"]["face_check"]},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, face_model):
        return True if isinstance(face_model, str) else f"face_model must be a file name, got {face_model!r}"

    def restore(self, model, image, face, index, detector, min_face_size, if_no_face, reffr, face_model, cfg_scale,
                tile_size, tile_overlap, color_fix, paste_face, references=None, reference_files=None,
                face_check=True):
        from . import folders

        refs = to_arrays(references, "references") if references is not None else []
        names = reference_names(reference_files, refs)
        det = model.helper(("detector", detector), lambda: make_detector(detector))
        emb = model.helper("embedder", make_embedder) if refs else None
        # a gallery runs this node once per photo with the same references: prepare them once
        key = (detector, hashlib.sha1(b"".join(r.tobytes() for r in refs)).hexdigest(), len(refs))
        prepared = model.latest("references", key, lambda: prepare_references(refs, det, emb, names)) if refs else None
        found = detect_faces(to_arrays(image), refs, face=face, index=index, min_face_size=min_face_size,
                             if_no_face=if_no_face, detector=det, embedder=emb, detector_name=detector,
                             prepared=prepared)
        path = folders.resolve_model_file(folders.FACERESTORE_FOLDER, face_model, "face-restoration model") \
            if reffr == "model file" else None
        # a gallery runs this node once per photo: keep the face model (and its patcher) between photos
        loaded_model = model.latest("face_model", str(path), lambda: face_model_with_patcher(path)) if path else None
        hq = restore_faces(found, reffr, path, face_model=loaded_model)
        tokens = degradation_tokens(model, extract_degradation(model, found, hq))
        checks: list | None = [] if face_check else None
        restored = restore_images(model, image, tokens, cfg_scale=cfg_scale, tile_size=tile_size,
                                  tile_overlap=tile_overlap, color_fix=color_fix,
                                  paste=(found, hq) if paste_face else None,
                                  check=(found, hq) if face_check else None, verdicts=checks)
        return (restored, faces_image(found, hq), report(found, model, checks))


__all__ = ["COLOR_FIXES", "Face2SceneOneStepRestore", "Face2SceneRestore", "report", "restore_images"]
