"""Face detection on real photos (counts a person made by eye) and the Ref-FR interface."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from face2scene_core.errors import ArchitectureMismatchError, ReferenceImageError, WeightsNotFoundError
from face2scene_core.faces import Face, align_face, get_detector
from face2scene_core.faces.detect import RetinaFaceDetector, nms
from face2scene_core.imageio import load_image
from face2scene_core.reffr import GivenFaceRefFR, RefFR
from shared_data import datasets_dir


_datasets = datasets_dir


FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "face_counts.json").read_text())


@pytest.fixture(scope="module")
def data() -> Path:
    return _datasets()


@pytest.fixture(scope="module")
def detector() -> RetinaFaceDetector:
    return get_detector()


def _ids(entries):
    return ["/".join(e["path"].split("/")[-2:]) for e in entries]


@pytest.mark.parametrize("entry", FIXTURE["groups"], ids=_ids(FIXTURE["groups"]))
def test_group_photo_face_count(detector, data, entry):
    faces = detector.detect(load_image(data / entry["path"]))
    lo, hi = entry["faces"], entry["faces"] + entry["optional"]
    assert lo <= len(faces) <= hi, f"{entry['path']}: found {len(faces)} faces, a person counts {lo} (up to {hi})"


@pytest.mark.parametrize("entry", FIXTURE["degraded_groups"], ids=_ids(FIXTURE["degraded_groups"]))
def test_degraded_photo_face_count(detector, data, entry):
    faces = detector.detect(load_image(data / entry["path"]))
    lo, hi = entry["faces"], entry["faces"] + entry["optional"]
    assert lo <= len(faces) <= hi, f"{entry['path']}: found {len(faces)} faces, a person counts {lo} (up to {hi})"


@pytest.mark.parametrize("entry", FIXTURE["no_faces"], ids=_ids(FIXTURE["no_faces"]))
def test_scene_without_people_has_no_face(detector, data, entry):
    faces = detector.detect(load_image(data / entry["path"]))
    found = [(round(f.score, 3), f.bbox.round().tolist()) for f in faces]
    assert faces == [], f"{entry['path']} ({entry['note']}): {found}"


def test_faces_sorted_largest_first_with_float_landmarks_in_image_order(detector, data):
    img = load_image(data / "faces_identity/face-api.js/examples/images/bbt4.jpg")
    faces = detector.detect(img)
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    all_lm = np.concatenate([f.landmarks for f in faces])
    assert all_lm.dtype == np.float32
    assert np.any(np.abs(all_lm - np.round(all_lm)) > 0.05), "landmarks were rounded to integers"
    for f in faces:
        assert 0.5 < f.score <= 1.0
        x1, y1, x2, y2 = f.bbox
        le, re, nose, lm, rm = f.landmarks
        assert x1 <= f.landmarks[:, 0].min() and f.landmarks[:, 0].max() <= x2
        assert y1 <= f.landmarks[:, 1].min() and f.landmarks[:, 1].max() <= y2
        assert le[0] < re[0] and lm[0] < rm[0], "left/right as seen in the image"
        assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1]), "eyes above nose above mouth"


def test_large_photo_boxes_are_rescaled_to_photo_pixels(detector, data):
    img = load_image(data / "faces_identity/face-api.js/examples/images/bbt1.jpg")  # 1366x768
    big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)  # 2732x1536, scanned at 1600
    assert detector.pass_scales(*big.shape[:2])[0] < 1.0
    small_faces, big_faces = detector.detect(img), detector.detect(big)
    assert len(small_faces) == len(big_faces) == 4
    for a in small_faces:
        b = min(big_faces, key=lambda f: np.abs(f.landmarks - 2 * a.landmarks - 0.5).sum())
        iod = np.linalg.norm(a.landmarks[0] - a.landmarks[1])
        assert np.abs(b.landmarks - (2 * a.landmarks + 0.5)).max() < 0.25 * 2 * iod
        assert abs(b.width / a.width - 2) < 0.2


def test_pass_scales_cover_native_resolution_up_to_the_cap(detector):
    assert detector.pass_scales(512, 512) == [1.0]
    s = detector.pass_scales(2048, 2048)
    assert s[0] == pytest.approx(1600 / 2048) and s[-1] == pytest.approx(640 / 2048)
    assert all(a / b <= 3.0 + 1e-9 for a, b in zip(s, s[1:]))
    s = get_detector(max_size=4000, verify=False).pass_scales(3000, 4000)
    assert s[0] == 1.0 and s[-1] == pytest.approx(640 / 4000) and len(s) == 3


def test_grey_image_and_thresholds(detector, data):
    img = load_image(data / "faces_identity/face-api.js/examples/images/bbt3.jpg")
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    assert len(detector.detect(grey)) == 5
    loose = get_detector(score_threshold=0.3, verify=False).detect(img)
    strict = get_detector(score_threshold=0.999, verify=False).detect(img)
    assert len(strict) <= 5 <= len(loose)
    assert all(f.score >= 0.999 for f in strict)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=np.float32)
    keep = nms(boxes, np.array([0.8, 0.9, 0.7]), 0.4)
    assert keep.tolist() == [1, 2]
    assert nms(boxes, np.array([0.8, 0.9, 0.7]), 0.9).tolist() == [1, 0, 2]


def test_bad_arguments_raise_value_error(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        detector.detect(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(ValueError, match="score_threshold"):
        get_detector(score_threshold=1.5)
    with pytest.raises(ValueError, match="'mtcnn'"):
        get_detector("mtcnn")
    with pytest.raises(ValueError, match="model_dir"):
        get_detector("retinaface", model_dir="/somewhere")
    with pytest.raises(ValueError, match="(5, 2)"):
        Face(bbox=[0, 0, 1, 1], landmarks=np.zeros((4, 2)))


def test_insightface_backend_never_downloads(tmp_path):
    missing = tmp_path / "buffalo_l"
    with pytest.raises(WeightsNotFoundError, match="buffalo_l"):
        get_detector("insightface", model_dir=missing)
    with pytest.raises(WeightsNotFoundError, match="model_dir"):
        get_detector("insightface")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError, match="det_10g.onnx"):
        get_detector("insightface", model_dir=tmp_path / "empty")


def _tiny_recognition_onnx(path: Path) -> Path:
    """A 112x112 -> 512 ONNX model with the shape of an insightface ArcFace file (random weights)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, 512)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(512, np.float32), "B")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input.1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "W", "B"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])], [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_insightface_backend_refuses_a_model_that_is_not_a_detector(tmp_path):
    pytest.importorskip("insightface")
    _tiny_recognition_onnx(tmp_path / "models" / "buffalo_l" / "det_10g.onnx")
    with pytest.raises(ArchitectureMismatchError, match="det_10g.onnx"):
        get_detector("insightface", model_dir=tmp_path / "models")


# ---- Ref-FR interface -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aligned_faces(detector, data):
    img = load_image(data / "faces_identity/face-api.js/examples/images/bbt1.jpg")
    return [align_face(img, f) for f in detector.detect(img)[:2]]


def test_given_face_ref_fr_returns_the_given_face(aligned_faces):
    lq, hq = aligned_faces
    fr = GivenFaceRefFR(hq.image)
    out = fr.restore(lq.image, [hq.image])
    assert out.dtype == np.uint8 and out.shape == (512, 512, 3)
    assert np.array_equal(out, hq.image)
    out[:] = 0
    assert np.array_equal(fr.restore(lq, []), hq.image), "restore must return a copy"


def test_given_face_ref_fr_resizes_and_says_so(aligned_faces, caplog):
    hq = aligned_faces[1].image
    small = cv2.resize(hq, (256, 256), interpolation=cv2.INTER_AREA)
    with caplog.at_level(logging.INFO, logger="face2scene_core.reffr.given"):
        fr = GivenFaceRefFR(small)
    assert "resized the given HQ face from 256x256 to 512x512" in caplog.text
    out = fr.restore(aligned_faces[0].image)
    assert out.shape == (512, 512, 3)
    assert np.abs(out.astype(float) - hq.astype(float)).mean() < 6.0
    as_float = GivenFaceRefFR(hq.astype(np.float32) / 255.0).restore(aligned_faces[0].image)
    assert np.abs(as_float.astype(int) - hq.astype(int)).max() <= 1


def test_ref_fr_validates_inputs_and_outputs(aligned_faces):
    lq = aligned_faces[0].image
    fr = GivenFaceRefFR(aligned_faces[1])
    with pytest.raises(ValueError, match="lq_face"):
        fr.restore(lq[:256])
    with pytest.raises(ValueError, match="lq_face"):
        fr.restore(lq.astype(np.float32))
    with pytest.raises(ValueError, match=r"references\[1\]"):
        fr.restore(lq, [lq, lq[:, :, :2]])
    with pytest.raises(ValueError, match="list"):
        fr.restore(lq, lq)
    with pytest.raises(ValueError, match="float"):
        GivenFaceRefFR(np.full((512, 512, 3), 2.0, np.float32))

    class NeedsRefs(RefFR):
        name = "needs-refs"
        requires_references = True

        def _restore(self, lq_face, references):
            return np.mean(references, axis=0).astype(np.uint8)

    with pytest.raises(ReferenceImageError, match="needs-refs"):
        NeedsRefs().restore(lq, [])
    assert NeedsRefs().restore(lq, [lq, lq]).shape == (512, 512, 3)

    class Upscaler(RefFR):
        name = "x2"

        def _restore(self, lq_face, references):
            return cv2.resize(lq_face, (1024, 1024), interpolation=cv2.INTER_CUBIC)

    out = Upscaler().restore(lq)
    assert out.shape == (512, 512, 3) and np.abs(out.astype(float) - lq).mean() < 2.0

    class Broken(RefFR):
        name = "broken"

        def _restore(self, lq_face, references):
            return lq_face.astype(np.float32) / 255.0

    with pytest.raises(ValueError, match="broken"):
        Broken().restore(lq)
