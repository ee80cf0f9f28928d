"""End-to-end: Face2ScenePipeline and the ``face2scene`` command line on real photos, with tiny models."""

import json
from pathlib import Path

import numpy as np
import pytest

from face2scene_core import NoFaceError, ReferenceImageError
from face2scene_core.cli import main
from face2scene_core.degradation import PRESETS, degrade_image
from face2scene_core.fadex.model import FaDeX
from face2scene_core.faces.align import align_face
from face2scene_core.faces.detect import get_detector
from face2scene_core.imageio import load_image, save_image
from face2scene_core.pipeline import Face2ScenePipeline
from face2scene_core.restorer.model import OneStepRestorer
from face2scene_core.training.data import default_datasets_dir

DATA = default_datasets_dir()  # shared/datasets beside the checkout, $FACE2SCENE_DATASETS, or beside its origin
DEEPFACE = DATA / "faces_identity/deepface/tests/unit/dataset"
NO_FACE = DATA / "faces_real/ffdnet/testsets/RNI6/Building.png"


def _small(img: np.ndarray, side: int = 480) -> np.ndarray:
    import cv2

    s = side / max(img.shape[:2])
    return cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    fadex = FaDeX(channels=(16, 32, 64), blocks_per_stage=(1, 1, 1), embed_dim=32, proj_hidden=64)
    fadex.save_pretrained(d / "fadex", safe_serialization=True)
    restorer = OneStepRestorer.small(feature_channels=64, token_dim=64, block_out_channels=(32, 32, 64),
                                     attention_heads=2, identity_init=False, seed=1)
    restorer.save_adapter(d / "restorer.safetensors")
    return d


@pytest.fixture(scope="module")
def pipe(models):
    return Face2ScenePipeline.from_paths(adapter=str(models / "restorer.safetensors"), fadex=str(models / "fadex"),
                                         device="cpu")


@pytest.fixture(scope="module")
def person():
    clean = _small(load_image(DEEPFACE / "img55.jpg"))
    lq = degrade_image(clean, PRESETS["D4"])
    refs = [_small(load_image(DEEPFACE / n)) for n in ("img12.jpg", "img53.jpg")]
    return clean, lq, refs


def test_pipeline_restores_whole_photo_and_reports_every_stage(pipe, person):
    clean, lq, refs = person
    face = get_detector("retinaface").detect(clean)[0]
    gt_face = align_face(clean, face).image  # non-reference mode: the ground-truth face is the HQ face
    out = pipe(lq, refs, hq_face=gt_face)
    assert out.image.shape == lq.shape and out.image.dtype == np.uint8
    assert not np.array_equal(out.image, lq)
    rep = out.report
    assert rep["faces"] and rep["face_used"]["index"] == 0
    assert "similarity" in rep["face_used"]["reason"] and len(rep["face_used"]["identity_scores"]) == len(rep["faces"])
    assert len(rep["degradation_embedding"]) == 32
    for stage in ("detect", "references", "identity", "align", "reffr", "fadex", "mapnet", "encode", "unet",
                  "decode", "restore"):
        assert stage in rep["timings_s"], stage
    json.dumps(rep)  # the report is JSON-serialisable


def test_degradation_tokens_follow_the_degradation(pipe, person):
    clean, lq, refs = person
    face = get_detector("retinaface").detect(clean)[0]
    gt_face = align_face(clean, face).image
    a = pipe(lq, refs, hq_face=gt_face).report["degradation_embedding"]
    b = pipe(degrade_image(clean, PRESETS["D3"]), refs, hq_face=gt_face).report["degradation_embedding"]
    assert not np.allclose(a, b, atol=1e-4)


def test_references_are_prepared_once_for_a_gallery(pipe, person, monkeypatch):
    import face2scene_core.faces.select as select

    clean, lq, refs = person
    refs = [r.copy() for r in refs]  # arrays this module's pipeline has not seen yet
    gt_face = np.zeros((512, 512, 3), np.uint8)
    calls = []
    real = select.prepare_references
    monkeypatch.setattr(select, "prepare_references", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = pipe(lq, refs, hq_face=gt_face).report["face_used"]
    again = pipe(degrade_image(clean, PRESETS["D3"]), refs, hq_face=gt_face).report["face_used"]
    assert len(calls) == 1 and first["identity_scores"] is not None
    pipe(lq, [r.copy() for r in refs], hq_face=gt_face)  # other reference arrays: prepared anew
    assert len(calls) == 2 and again["reason"].startswith("best match to the 2 reference(s)")


def test_no_face_is_an_error_unless_fallback_is_asked(pipe):
    photo = load_image(NO_FACE)
    with pytest.raises(NoFaceError, match="no face"):
        pipe(photo)
    out = pipe(photo, no_face_ok=True)
    assert out.image.shape == photo.shape and "fallback" in out.report


def test_reference_without_face_names_the_reference(pipe, person):
    _, lq, refs = person
    with pytest.raises(ReferenceImageError, match="reference"):
        pipe(lq, refs + [load_image(NO_FACE)], hq_face=np.zeros((512, 512, 3), np.uint8))


def test_cli_gallery_keeps_going_never_overwrites_and_reports(models, person, tmp_path, capsys):
    _, lq, refs = person
    gallery, refs_dir, out = tmp_path / "gallery", tmp_path / "refs", tmp_path / "out"
    save_image(gallery / "portrait.png", lq)
    save_image(gallery / "building.png", load_image(NO_FACE))
    (gallery / "broken.jpg").write_bytes(b"not a jpeg")
    for i, r in enumerate(refs):
        save_image(refs_dir / f"ref{i}.png", r)
    before = {p.name: p.read_bytes() for p in gallery.iterdir()}
    args = ["restore", str(gallery), "--refs", str(refs_dir), "-o", str(out), "--fadex", str(models / "fadex"),
            "--adapter", str(models / "restorer.safetensors"), "--face", "largest", "--device", "cpu"]
    assert main(args) == 1  # two of three images fail, the batch goes on
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "building.png" in err and "2 of 3" in err
    assert sum("broken.jpg" in line for line in err.splitlines()) == 1, "each failure is printed once"
    assert (out / "portrait.png").is_file()
    lines = [json.loads(line) for line in (out / "face2scene_report.jsonl").read_text().splitlines()]
    kinds = {Path(r["input"]).name: r.get("error_type") for r in lines if r["event"] == "photo"}
    assert kinds == {"portrait.png": None, "building.png": "NoFaceError", "broken.jpg": "InputImageError"}
    assert lines[-1]["event"] == "summary" and lines[-1]["failed"] == 2
    first = (out / "portrait.png").read_bytes()
    assert main(args) == 1  # the same command again: the finished photo is skipped, the failures retried
    assert "done before" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["face2scene_report.jsonl", "portrait.png"]
    assert (out / "portrait.png").read_bytes() == first, "a finished output is never rewritten"
    assert {p.name: p.read_bytes() for p in gallery.iterdir()} == before, "originals must be untouched"


def test_cli_missing_input_is_one_clear_line(models, tmp_path, capsys):
    code = main(["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png"),
                 "--fadex", str(models / "fadex"), "--adapter", str(models / "restorer.safetensors")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.png" in err[0]


def test_cli_missing_weights_say_what_to_do(tmp_path, capsys):
    code = main(["restore", str(NO_FACE), "-o", str(tmp_path / "o.png"), "--fadex", str(tmp_path / "nothing")])
    assert code == 2
    assert "FaDeX weights not found" in capsys.readouterr().err


def test_cli_degrade_is_deterministic_and_records_parameters(tmp_path):
    src = tmp_path / "in"
    save_image(src / "a.png", _small(load_image(NO_FACE), 160))
    for run in ("r1", "r2"):
        assert main(["degrade", str(src), "-o", str(tmp_path / run), "--seed", "3", "--copies", "2"]) == 0
    files = sorted(p.name for p in (tmp_path / "r1").iterdir())
    assert files == ["a_deg00.json", "a_deg00.png", "a_deg01.json", "a_deg01.png"]
    for f in files:
        assert (tmp_path / "r1" / f).read_bytes() == (tmp_path / "r2" / f).read_bytes()
    meta = json.loads((tmp_path / "r1" / "a_deg00.json").read_text())
    assert meta["seed"] == 3 and "stage1" in meta["params"]
    assert (tmp_path / "r1" / "a_deg00.png").read_bytes() != (tmp_path / "r1" / "a_deg01.png").read_bytes()


def test_cli_degrade_spatially_varying_records_it(tmp_path):
    src = tmp_path / "in"
    save_image(src / "a.png", _small(load_image(NO_FACE), 160))
    assert main(["degrade", str(src), "-o", str(tmp_path / "o"), "--spatially-varying"]) == 0
    meta = json.loads((tmp_path / "o" / "a_deg00.json").read_text())
    assert meta["params"]["spatial_blur"]["sigma_corner"] > meta["params"]["spatial_blur"]["sigma_center"]


def test_bench_unknown_model_is_a_one_line_error(capsys):
    """`face2scene bench --models` with a name it does not know: exit 2 and one line naming the choices."""
    assert main(["bench", "--models", "embedded,sd15", "--sizes", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sd15" in err and "embedded, tiny, sd21" in err
