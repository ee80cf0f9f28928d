"""Degradation codes with the shipped model on real photos: saved, reloaded, pooled over faces and photos, used for a
photo without a face; files from another model or corrupt files are refused in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from face2scene_core.cli import main
from face2scene_core.codes import DegradationCode, load_code, model_ids, pool_codes, save_code
from face2scene_core.errors import CodeFileError
from face2scene_core.imageio import load_image
from shared_data import datasets_dir

PORTRAIT = "faces_identity/deepface/tests/unit/dataset/img25.jpg"
REFERENCE = "faces_identity/deepface/tests/unit/dataset/img24.jpg"
GROUP = "faces_real/codeformer/inputs/whole_imgs/01.jpg"  # four people
NO_FACE = "scenes_clean/ffdnet/testsets/CBSD68/103070.png"  # a clean scene, no face


@pytest.fixture(scope="module")
def pipe():
    from face2scene_core.pipeline import Face2ScenePipeline

    return Face2ScenePipeline.from_paths(device="cpu")


def _img(rel: str) -> np.ndarray:
    return load_image(datasets_dir() / rel)


def _noisy(img: np.ndarray, seed: int, sigma: float = 15.0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(img + noise, 0, 255).round().astype(np.uint8)


def test_a_saved_code_restores_exactly_as_the_live_face_does_and_rescues_a_faceless_photo(pipe, tmp_path):
    photo, ref = _img(PORTRAIT), _img(REFERENCE)
    code = pipe.code(photo, [ref], source="img25.jpg")
    assert code.tokens.shape == (1, 21, 256) and code.meta["sources"][0]["photo"] == "img25.jpg"
    path = save_code(tmp_path / "c.safetensors", code)
    back = load_code(path, expect=model_ids(pipe))
    assert torch.equal(back.tokens, code.tokens) and back.meta == code.meta
    live = pipe(photo, [ref]).image
    assert np.array_equal(pipe(photo, [ref], code=back, code_use="always").image, live)
    from face2scene_core.errors import NoFaceError
    from face2scene_core.evaluation.metrics import psnr

    clean = _img(NO_FACE)[:192, :192]
    building = _noisy(clean, 1)
    with pytest.raises(NoFaceError):
        pipe(building)
    shoot = pipe.code(_noisy(photo, 2), [ref])  # the same camera noise, read from the portrait's face
    with_code = pipe(building, code=shoot)
    assert with_code.report["code"]["used"] == "fallback"
    blind = pipe(building, no_face_ok=True).image
    assert psnr(with_code.image, clean) > psnr(building, clean) + 2.0 > psnr(blind, clean) + 2.0 - 0.5


def test_all_faces_of_a_group_photo_are_pooled_by_size_and_score(pipe):
    group = _img(GROUP)
    report: dict = {}
    pooled = pipe.code(group, face="all", report=report)
    sources = pooled.meta["sources"]
    assert len(sources) == 4 == len(report["face_used"]["agreement"])
    w = np.array(pooled.meta["pooled_weights"])
    assert w.sum() == pytest.approx(1.0, abs=1e-3) and np.all(np.diff([s["weight"] for s in sources]) <= 0)
    singles = [pipe.code(group, face=i) for i in range(4)]
    by_hand = sum(float(wi) * c.tokens for wi, c in zip(w, singles))
    assert torch.allclose(pooled.tokens, by_hand, atol=1e-3)
    assert pipe(group, face="all").report["face_used"]["index"] == "all"


def test_code_files_from_another_model_or_corrupt_are_refused_in_one_line(pipe, tmp_path):
    code = pipe.code(_img(PORTRAIT), [_img(REFERENCE)])
    other = DegradationCode(code.tokens, code.embedding, {**code.meta, "restorer_id": "0123456789ab"})
    path = save_code(tmp_path / "other.safetensors", other)
    with pytest.raises(CodeFileError, match=r"made by restorer 0123456789ab \+ FaDeX .*make the code again") as e:
        load_code(path, expect=model_ids(pipe))
    assert "\n" not in str(e.value)
    with pytest.raises(CodeFileError, match="made by restorer 0123456789ab"):
        pipe(_img(PORTRAIT), code=other)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CodeFileError, match="not a readable degradation code file"):
        load_code(broken)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(CodeFileError, match="not a Face2Scene degradation code"):
        load_code(tmp_path / "weights.safetensors")
    with pytest.raises(CodeFileError, match="different models"):
        pool_codes([code, other])


def test_cli_code_and_shoot_code_restore_a_faceless_photo_and_resume(tmp_path, capsys):
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    shutil.copy(datasets_dir() / PORTRAIT, shoot / "portrait.jpg")
    Image.fromarray(_img(NO_FACE)[:192, :192]).save(shoot / "building.png")
    code = tmp_path / "shoot.safetensors"
    assert main(["code", str(shoot), "-o", str(code)]) == 0
    assert "building.png: no usable face" in capsys.readouterr().out
    assert main(["restore", str(shoot / "building.png"), "-o", str(tmp_path / "b.png"), "--code", str(code)]) == 0
    rec = [json.loads(line) for line in (tmp_path / "b.report.jsonl").read_text().splitlines()]
    assert any(r.get("report", {}).get("code", {}).get("used") == "fallback" for r in rec)
    assert main(["restore", str(shoot / "building.png"), "-o", str(tmp_path / "c.png"), "--code",
                 str(shoot / "portrait.jpg")]) == 2  # not a code file: one line, before any model loads
    assert "not a readable degradation code file" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["restore", str(shoot), "-o", str(out), "--shoot-code"]) == 0
    assert "1 face(s) from 1 of 2 photo(s)" in capsys.readouterr().out
    assert (out / "face2scene_shoot_code.safetensors").is_file() and (out / "building.png").is_file()
    assert main(["restore", str(shoot), "-o", str(out), "--shoot-code"]) == 0  # resumed: code and photos reused
    printed = capsys.readouterr().out
    assert "from an earlier run" in printed and "0 restored, 2 already done" in printed
