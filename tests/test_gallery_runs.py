"""`face2scene restore FOLDER` as an artist uses it: bad inputs, kill -9 and rerun, locks, several people.

Tiny random models (the pipeline's code path, fast on a CPU) on real photos from ``shared/datasets``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from face2scene_core.batch import JOURNAL_NAME, Journal
from face2scene_core.cli import main
from face2scene_core.fadex.model import FaDeX
from face2scene_core.imageio import load_photo, save_image
from face2scene_core.pipeline import Face2ScenePipeline
from face2scene_core.restorer.model import OneStepRestorer
from face2scene_core.training.data import default_datasets_dir

DATA = default_datasets_dir()  # shared/datasets beside the checkout, $FACE2SCENE_DATASETS, or beside its origin
DEEPFACE = DATA / "faces_identity/deepface/tests/unit/dataset"
NO_FACE = DATA / "faces_real/ffdnet/testsets/RNI6/Building.png"
REPO = Path(__file__).resolve().parents[1]


def _small(name: str, side: int = 400) -> np.ndarray:
    img = load_photo(DEEPFACE / name).rgb
    s = side / max(img.shape[:2])
    return cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    FaDeX(channels=(16, 32, 64), blocks_per_stage=(1, 1, 1), embed_dim=32, proj_hidden=64).save_pretrained(
        d / "fadex", safe_serialization=True)
    OneStepRestorer.small(feature_channels=64, token_dim=64, block_out_channels=(32, 32, 64), attention_heads=2,
                          identity_init=False, seed=1).save_adapter(d / "restorer.safetensors")
    return d


def _args(models: Path, src, out, *extra) -> list[str]:
    return ["restore", str(src), "-o", str(out), "--fadex", str(models / "fadex"),
            "--adapter", str(models / "restorer.safetensors"), "--device", "cpu", *map(str, extra)]


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / JOURNAL_NAME).read_text().splitlines()]


@pytest.fixture()
def no_models(monkeypatch):
    """Fails the test if models are loaded: checks must come first."""
    def boom(*a, **k):
        raise AssertionError("models were loaded before the paths were checked")
    monkeypatch.setattr(Face2ScenePipeline, "from_paths", boom)


# ------------------------------------------------------------------------------------------ kill -9 and rerun
def test_kill_9_then_rerun_resumes_with_one_output_per_input(models, tmp_path):
    gallery, out = tmp_path / "gallery", tmp_path / "out"
    faces = ["img55.jpg", "img56.jpg", "img12.jpg", "img53.jpg", "img11.jpg", "img17.jpg"]
    for i, n in enumerate(faces):
        save_image(gallery / ("sub" if i % 2 else ".") / f"p{i}.png", _small(n))
    (gallery / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    before = _hashes(gallery)
    args = _args(models, gallery, out, "--face", "largest")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "face2scene_core.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill once the first photo is done
        if (out / JOURNAL_NAME).is_file() and '"ok": true' in (out / JOURNAL_NAME).read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make the gallery bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = [r for r in _journal(out) if r.get("ok")]
    assert 1 <= len(done_before) < len(faces), "a killed run leaves a valid record of what it finished"
    (out / ".p4.png.k1ll3d9x.tmp").write_bytes(b"\x89PNG half written")  # a save cut by the kill
    assert main(args) == 1  # the corrupt file fails, everything else is restored
    outputs = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != JOURNAL_NAME)
    assert outputs == sorted(f"{'sub/' if i % 2 else ''}p{i}.png" for i in range(len(faces))), outputs
    assert all(load_photo(out / o).rgb.shape[2] == 3 for o in outputs)
    assert not list(out.rglob("*.tmp")), "no temporary file may be left"
    assert _hashes(gallery) == before, "originals unchanged"
    records = _journal(out)  # every line is valid JSON
    photos = {r["input"]: r for r in records if r["event"] == "photo"}
    assert len(photos) == len(faces) + 1 and records[-1]["event"] == "summary"
    assert sum(1 for r in records if r.get("skipped")) == len(done_before)


# ------------------------------------------------------------------------------------------ the bad inputs
def test_bad_inputs_each_fail_in_one_line_and_the_run_goes_on(models, tmp_path, capsys):
    gallery, out = tmp_path / "gallery", tmp_path / "out"
    save_image(gallery / "good.png", _small("img55.jpg"))
    (gallery / "zero.png").write_bytes(b"")
    (gallery / "text.jpg").write_text("this is a text file")
    jpeg = (DEEPFACE / "img12.jpg").read_bytes()
    (gallery / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    save_image(gallery / "no_face.png", load_photo(NO_FACE).rgb)
    save_image(gallery / "tiny_face.png", _small("img55.jpg", side=40))
    os.symlink(gallery, gallery / "loop")
    assert main(_args(models, gallery, out, "--face", "largest")) == 1
    err = capsys.readouterr().err.splitlines()
    results = {Path(r["input"]).name: r for r in _journal(out) if r["event"] == "photo"}
    assert results["good.png"]["ok"] and (out / "good.png").is_file()
    failed = {n for n, r in results.items() if not r["ok"]}
    assert failed >= {"zero.png", "text.jpg", "no_face.png", "tiny_face.png"}
    for name in failed:
        assert sum(name in line for line in err) == 1, f"{name}: one line, printed once"
        assert "Traceback" not in results[name]["error"]
    assert not [k for k in results if "loop" in k], "a symlink loop is followed once at most"


def test_any_error_of_one_photo_is_caught_reported_and_the_run_goes_on(models, tmp_path, capsys, monkeypatch):
    gallery, out = tmp_path / "gallery", tmp_path / "out"
    for n in ("a", "b", "c"):
        save_image(gallery / f"{n}.png", _small("img55.jpg"))
    real = Face2ScenePipeline.__call__
    calls = {"n": 0}

    def flaky(self, photo, *a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError()
        if calls["n"] == 2:
            raise KeyError("a bug")
        return real(self, photo, *a, **k)

    monkeypatch.setattr(Face2ScenePipeline, "__call__", flaky)
    assert main(_args(models, gallery, out, "--face", "largest")) == 1
    err = capsys.readouterr().err
    results = {Path(r["input"]).name: r for r in _journal(out) if r["event"] == "photo"}
    assert results["a.png"]["error_type"] == "MemoryError" and "out of memory" in results["a.png"]["error"]
    assert results["b.png"]["error_type"] == "KeyError" and "traceback" in results["b.png"]
    assert results["c.png"]["ok"]
    assert "Traceback" not in err and "2 of 3" in err


def test_paths_are_checked_before_models_load(models, tmp_path, capsys, no_models):
    gallery = tmp_path / "gallery"
    save_image(gallery / "a.png", _small("img55.jpg"))
    cases = {
        "missing input": (_args(models, tmp_path / "nope", tmp_path / "o"), "input not found"),
        "output = input": (_args(models, gallery, gallery), "output folder is the input folder"),
        "empty references": (_args(models, gallery, tmp_path / "o", "--refs", tmp_path), "no reference images"),
        "missing references": (_args(models, gallery, tmp_path / "o", "--refs", tmp_path / "r"), "not found"),
    }
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    if not os.access(ro, os.W_OK):  # root can write anywhere
        cases["read-only output"] = (_args(models, gallery, ro), "cannot write into the output folder")
    for name, (args, words) in cases.items():
        assert main(args) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and words in err[0], (name, err)
    assert sorted(p.name for p in gallery.iterdir()) == ["a.png"], "nothing written beside the originals"


def test_read_only_output_folder_is_refused_before_models_load(models, tmp_path, capsys, no_models, monkeypatch):
    gallery = tmp_path / "gallery"
    save_image(gallery / "a.png", _small("img55.jpg"))
    import face2scene_core.batch as batch

    def denied(folder, name, data):
        raise PermissionError(13, "Permission denied", str(folder))
    monkeypatch.setattr(batch, "write_temp", denied)  # works for root too
    assert main(_args(models, gallery, tmp_path / "o")) == 2
    assert "cannot write into the output folder" in capsys.readouterr().err


def test_output_inside_input_is_left_out_and_subfolders_keep_their_structure(models, tmp_path):
    gallery = tmp_path / "gallery"
    save_image(gallery / "a.png", _small("img55.jpg"))
    save_image(gallery / "trip" / "day1" / "b.jpg", _small("img56.jpg"))
    out = gallery / "restored"
    args = _args(models, gallery, out, "--face", "largest")
    assert main(args) == 0
    assert (out / "a.png").is_file() and (out / "trip" / "day1" / "b.jpg").is_file()
    assert Image.open(out / "trip" / "day1" / "b.jpg").format == "JPEG", "each photo keeps its format"
    assert main(args) == 0  # the outputs are not read as inputs the second time
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.*")) == sorted(
        ["a.png", "trip/day1/b.jpg", JOURNAL_NAME])


def test_a_second_run_into_a_locked_output_is_refused_clearly(models, tmp_path, capsys, no_models):
    gallery, out = tmp_path / "gallery", tmp_path / "out"
    save_image(gallery / "a.png", _small("img55.jpg"))
    with Journal(out / JOURNAL_NAME) as j:
        j.write({"event": "run", "pid": 4242})
        assert main(_args(models, gallery, out)) == 2
    err = capsys.readouterr().err
    assert "another face2scene run (pid 4242)" in err and "choose another output" in err


def test_single_photo_has_one_report_named_after_the_output_and_resumes(models, tmp_path, capsys):
    src = tmp_path / "in.png"
    save_image(src, _small("img55.jpg"))
    out = tmp_path / "restored.png"
    args = _args(models, src, out, "--face", "largest")
    assert main(args) == 0 and main(args) == 0
    assert "done before" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "restored.png", "restored.report.jsonl"]
    other = tmp_path / "other.png"
    save_image(other, _small("img56.jpg"))
    assert main(_args(models, other, out, "--face", "largest")) == 0  # another photo: a new name, same report
    assert (tmp_path / "restored_1.png").is_file() and not list(tmp_path.glob("*report_*"))


# ------------------------------------------------------------------------------------------ photos kept whole
def test_sideways_16_bit_grey_photo_with_alpha_comes_back_as_it_went_in(models, tmp_path):
    grey = cv2.cvtColor(_small("img55.jpg"), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257 + 77
    gallery, out = tmp_path / "gallery", tmp_path / "out"
    gallery.mkdir()
    Image.fromarray(grey).save(gallery / "grey16.png")  # I;16: read as 8-bit it clips to white
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = np.rot90(_small("img56.jpg"), 1)
    alpha = np.full(sideways.shape[:2], 200, np.uint8)
    Image.fromarray(np.dstack([sideways, alpha]), "RGBA").save(gallery / "side.png", exif=exif)
    assert main(_args(models, gallery, out, "--face", "largest")) == 0
    with Image.open(out / "grey16.png") as im:
        assert im.mode == "I;16" and im.size == (grey.shape[1], grey.shape[0])
    with Image.open(out / "side.png") as im:
        assert im.mode == "RGBA" and im.size == (sideways.shape[0], sideways.shape[1]), "upright"
        assert im.getexif().get(0x0112) == 1
        assert np.array_equal(np.asarray(im)[..., 3], alpha.T)


def test_several_people_each_photo_uses_the_person_it_shows(models, tmp_path):
    gallery, refs = tmp_path / "gallery", tmp_path / "refs"
    save_image(gallery / "p02.png", _small("img55.jpg"))  # deepface p02
    save_image(gallery / "p01.png", _small("img1.jpg"))  # deepface p01
    for n in ("img12.jpg", "img53.jpg"):
        save_image(refs / "anna" / n.replace(".jpg", ".png"), _small(n))
    for n in ("img2.jpg", "img6.jpg"):
        save_image(refs / "ben" / n.replace(".jpg", ".png"), _small(n))
    out = tmp_path / "out"
    assert main(_args(models, gallery, out, "--refs", f"anna={refs / 'anna'}", "--refs", f"ben={refs / 'ben'}")) == 0
    results = {Path(r["input"]).name: r["report"] for r in _journal(out) if r["event"] == "photo"}
    assert results["p02.png"]["person"] == "anna" and results["p01.png"]["person"] == "ben"
    for rep in results.values():
        assert set(rep["people"]) == {"anna", "ben"} and all("score" in v for v in rep["people"].values())
    assert main(_args(models, gallery, tmp_path / "o2", "--refs", refs / "anna", "--refs", refs / "ben")) == 2


def test_a_reference_without_a_face_stops_the_run_naming_the_file(models, tmp_path, capsys):
    gallery, refs = tmp_path / "gallery", tmp_path / "refs"
    save_image(gallery / "a.png", _small("img55.jpg"))
    save_image(refs / "good.png", _small("img12.jpg"))
    save_image(refs / "building.png", load_photo(NO_FACE).rgb)
    assert main(_args(models, gallery, tmp_path / "out", "--refs", refs)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "building.png" in err[0] and "No face" in err[0]
    assert not (tmp_path / "out" / "a.png").exists()
