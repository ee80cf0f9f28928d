"""ReferenceTransferRefFR (offline reference-based face restorer) and its evaluation harness, on real faces.

Thresholds were measured on the held-out FFHQ faces 00080/00085/00090/00095 (upscaled to 512):
with the ground truth as reference the PSNR(Y) gain was 9.4-10.6 dB for D1 and 6.2-8.7 dB for D2,
5.0-6.6 dB for D1 with a reference shifted by 6 px; the no-reference fallback gained 2.2-6.3 dB on
Gaussian noise sigma 12; a clean face restored with itself stayed at ~64 dB, and with another photo
of the same person as reference at >= 40 dB.
"""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from face2scene_core.degradation import PRESETS, degrade_image
from face2scene_core.errors import ReferenceImageError
from face2scene_core.imageio import load_image
from face2scene_core.evaluation.metrics import psnr
from face2scene_core.reffr.base import RefFR
from face2scene_core.reffr.transfer import ReferenceTransferRefFR, laplacian_pyramid, collapse_pyramid
from shared_data import datasets_dir


_datasets = datasets_dir


@pytest.fixture(scope="module")
def restorer() -> ReferenceTransferRefFR:
    return ReferenceTransferRefFR()


@pytest.fixture(scope="module")
def gt_face() -> np.ndarray:
    """A held-out FFHQ-aligned face (256 px in the dataset), enlarged to the 512 px template."""
    img = load_image(_datasets() / "faces_ffhq/daps_test/dataset/demo-ffhq/00080.png")
    return cv2.resize(img, (512, 512), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def two_photos_same_person() -> tuple[np.ndarray, np.ndarray]:
    """Two different photos of one held-out person (dlib's John_Simm chips), detected and aligned."""
    from face2scene_core.faces import align_face, get_detector

    folder = _datasets() / "faces_identity/dlib/examples/johns/John_Simm"
    det = get_detector("retinaface")
    out = []
    for name in ("000297_00470170.jpg", "000300_00470148.jpg"):
        photo = load_image(folder / name)
        faces = det.detect(photo)
        assert faces, f"no face detected in {name}"
        out.append(align_face(photo, faces[0], 512).image)
    return out[0], out[1]


def test_output_is_an_aligned_uint8_face_and_deterministic(restorer, gt_face):
    lq = degrade_image(gt_face, PRESETS["D1"])
    a = restorer.restore(lq, [gt_face])
    b = restorer.restore(lq.copy(), [gt_face.copy()])
    assert isinstance(restorer, RefFR) and restorer.name == "reference-transfer"
    assert a.dtype == np.uint8 and a.shape == (512, 512, 3)
    assert np.array_equal(a, b)
    assert not np.shares_memory(a, lq)


@pytest.mark.parametrize("op, min_gain", [("D1", 6.0), ("D2", 4.0)])
def test_ground_truth_reference_brings_back_the_face(restorer, gt_face, op, min_gain):
    lq = degrade_image(gt_face, PRESETS[op])
    hq, info = restorer.restore_with_info(lq, [gt_face])
    gain = psnr(hq, gt_face) - psnr(lq, gt_face)
    assert gain > min_gain, f"{op}: PSNR gain {gain:.2f} dB"
    # the x4 operators wipe out the finest band: the restorer must see it as lost, and the coarse one as kept
    assert info["visibility"][0] < 0.5 < info["visibility"][-1]
    assert not info["fallback"]


def test_shifted_reference_is_warped_back_onto_the_lq_geometry(restorer, gt_face):
    lq = degrade_image(gt_face, PRESETS["D1"])
    shifted = np.roll(gt_face, 6, axis=1)  # same face, 6 px to the right: pasting it would misalign
    hq = restorer.restore(lq, [shifted])
    assert psnr(hq, gt_face) - psnr(lq, gt_face) > 3.0
    assert psnr(hq, gt_face) > psnr(hq, shifted) + 2.0


def test_reference_colours_are_not_pasted(restorer, gt_face):
    lq = degrade_image(gt_face, PRESETS["D1"])
    tinted = np.clip(gt_face * np.array([0.7, 0.9, 1.3]), 0, 255).astype(np.uint8)  # blue cast
    hq = restorer.restore(lq, [tinted])
    mean_lq = lq.reshape(-1, 3).astype(np.float64).mean(0)
    mean_hq = hq.reshape(-1, 3).astype(np.float64).mean(0)
    assert np.abs(mean_hq - mean_lq).max() < 1.5, (mean_lq, mean_hq)
    assert psnr(hq, gt_face) - psnr(lq, gt_face) > 6.0


def test_clean_face_changes_little(restorer, two_photos_same_person):
    face, other = two_photos_same_person
    assert psnr(restorer.restore(face, [face]), face) > 45.0
    # another photo of the same person must not be pasted over a face that needs nothing
    assert psnr(restorer.restore(face, [other]), face) > 35.0


def test_other_photo_of_the_person_improves_a_degraded_face(restorer, two_photos_same_person):
    face, other = two_photos_same_person
    gains = []
    for op in ("D1", "D4"):
        lq = degrade_image(face, PRESETS[op])
        gains.append(psnr(restorer.restore(lq, [other]), face) - psnr(lq, face))
    assert min(gains) > 0.0 and np.mean(gains) > 0.3, gains


def test_no_reference_falls_back_to_denoising(restorer, gt_face, caplog):
    rng = np.random.default_rng(0)
    noisy = np.clip(gt_face + rng.normal(0.0, 12.0, gt_face.shape), 0, 255).astype(np.uint8)
    with caplog.at_level(logging.INFO, logger="face2scene_core.reffr.transfer"):
        hq, info = restorer.restore_with_info(noisy, [])
    assert info["fallback"]
    assert "no reference" in caplog.text
    assert psnr(hq, gt_face) - psnr(noisy, gt_face) > 1.5
    assert np.array_equal(restorer.restore(noisy, []), hq)


def test_bad_inputs_raise_value_error(restorer, gt_face):
    with pytest.raises(ValueError, match="lq_face"):
        restorer.restore(gt_face[:256, :256], [gt_face])
    with pytest.raises(ValueError, match="lq_face"):
        restorer.restore(gt_face.astype(np.float32) / 255.0, [gt_face])
    with pytest.raises(ValueError, match=r"references\[1\]"):
        restorer.restore(gt_face, [gt_face, gt_face[..., 0]])
    with pytest.raises(ValueError, match="list"):
        restorer.restore(gt_face, gt_face)
    for kwargs in ({"size": 32}, {"levels": 0}, {"max_references": 0}, {"noise_scale": -1.0},
                   {"denoise_levels": 9}, {"gain_range": (2.0, 1.0)}, {"flow_scale": 1.5}):
        with pytest.raises(ValueError):
            ReferenceTransferRefFR(**kwargs)


def test_pyramid_round_trip_is_exact():
    x = np.random.default_rng(1).uniform(0, 255, (512, 512)).astype(np.float32)
    bands, base = laplacian_pyramid(x, 5)
    assert [b.shape for b in bands] == [(512, 512), (256, 256), (128, 128), (64, 64), (32, 32)]
    assert np.abs(collapse_pyramid(bands, base) - x).max() < 1e-3


def test_evaluation_cli_writes_a_report(tmp_path):
    """End to end on one held-out identity (face-api.js 'amy', 5 grey crops) and one operator."""
    from face2scene_core.evaluation import reffr as evaluate

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"heldout_identities": ["faceapi:amy"]}))
    out = tmp_path / "eval"
    rc = evaluate.main(["--out", str(out), "--datasets", str(_datasets()), "--split", str(split),
                        "--sources", "faceapi", "--n-random", "0", "--gt-per-identity", "2", "--max-refs", "2"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())["with_references"]
    assert len(report["cases"]) == 8  # 2 GT x D1..D4
    case = report["cases"][0]
    assert case["identity"] == "faceapi:amy" and len(case["refs"]) == 2 and case["gt"] not in case["refs"]
    for metric in ("psnr", "ssim", "id_sim"):
        s = report["summary"][metric]
        assert s["lq"]["n"] == 8 and np.isfinite(s["hq"]["mean"])
    assert set(report["per_op"]) == {"D1", "D2", "D3", "D4"}
    # the embedded FaDeX embedded both pairs of every case: retrieval with GT and with Ref-FR faces
    fr = report["fadex_retrieval"]
    assert set(fr) == {"gt_hq", "reffr_hq", "cross"}
    assert 0.0 <= fr["cross"]["reffr_to_gt_top1"] <= 1.0
    for source in (fr["gt_hq"], fr["reffr_hq"]):
        assert set(source) == {"presets", "all", "per_operator_top1"}  # no R* operators in this run
        assert set(source["per_operator_top1"]) == {"D1", "D2", "D3", "D4"}
        assert 0.0 <= source["presets"]["top1_accuracy"] <= 1.0 and source["presets"]["chance_top1"] == pytest.approx(1 / 7)


def test_fadex_retrieval_scores_operator_codes_not_face_codes():
    from face2scene_core.evaluation.reffr import fadex_retrieval

    rng = np.random.default_rng(0)
    ops = ["D1", "D2", "D3", "R0", "R1"]
    n_faces, dim = 6, 16
    op_code = rng.normal(size=(len(ops), dim))
    face_code = rng.normal(size=(n_faces, dim))

    def grid(weight_op: float) -> list[np.ndarray]:
        embs = []
        for f in range(n_faces):  # faces outer, operators inner: the order evaluate_reffr runs
            for o in range(len(ops)):
                v = weight_op * op_code[o] + (1 - weight_op) * face_code[f] + 0.05 * rng.normal(size=dim)
                embs.append(v / np.linalg.norm(v))
        return embs

    res = fadex_retrieval(ops, {"degradation": grid(0.9), "content": grid(0.1)})
    assert set(res["degradation"]) == {"presets", "random", "all", "per_operator_top1"}
    assert res["degradation"]["per_operator_top1"] == {n: 1.0 for n in ops}
    assert res["degradation"]["all"]["top1_accuracy"] == 1.0 and res["degradation"]["all"]["gap"] > 0.5
    assert res["content"]["all"]["top1_accuracy"] < 0.2 and res["content"]["all"]["gap"] < 0
    # cross retrieval: Ref-FR codes against the GT codes of the other faces (what the restorer learnt from)
    good = fadex_retrieval(ops, {"gt_hq": grid(0.9), "reffr_hq": grid(0.9)})["cross"]
    assert good["reffr_to_gt_top1"] == good["gt_to_gt_top1"] == 1.0 and good["chance_top1"] == 1 / len(ops)
    bad = fadex_retrieval(ops, {"gt_hq": grid(0.9), "reffr_hq": grid(0.0)})["cross"]  # codes without the operator
    assert bad["reffr_to_gt_top1"] < 0.5 and set(bad["reffr_to_gt_per_operator"]) == set(ops)
    assert "note" in fadex_retrieval(ops, {"one_face": grid(0.9)[: len(ops)]})["one_face"]
    with pytest.raises(ValueError, match="grid"):
        fadex_retrieval(ops, {"bad": grid(0.9)[:-1]})


def test_evaluation_rejects_bad_arguments(restorer):
    from face2scene_core.evaluation.reffr import evaluate_reffr

    with pytest.raises(ValueError, match="gt_per_identity"):
        evaluate_reffr(restorer, {}, {"D1": PRESETS["D1"]}, embedder=object(), gt_per_identity=0)
    with pytest.raises(ValueError, match="degrade_ops"):
        evaluate_reffr(restorer, {}, {}, embedder=object())


def test_requires_references_flag_is_honoured(gt_face):
    class Strict(ReferenceTransferRefFR):
        requires_references = True

    with pytest.raises(ReferenceImageError):
        Strict().restore(gt_face, [])


def test_for_size_scales_the_pyramid_and_restores_smaller_faces(two_photos_same_person):
    assert repr(ReferenceTransferRefFR.for_size(512)) == repr(ReferenceTransferRefFR())
    small = ReferenceTransferRefFR.for_size(256)
    assert (small.size, small.levels, small.denoise_levels) == (256, 4, 4)
    gt, ref = (cv2.resize(x, (256, 256), interpolation=cv2.INTER_AREA) for x in two_photos_same_person)
    lq = degrade_image(gt, PRESETS["D2"])
    hq = small.restore(lq, [ref])
    assert hq.shape == gt.shape and psnr(hq, gt) > psnr(lq, gt) + 0.3
    with pytest.raises(ValueError, match="size"):
        ReferenceTransferRefFR.for_size(32)
