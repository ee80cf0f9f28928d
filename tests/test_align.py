"""Alignment, native-scale pairs, masks and paste-back on real photos."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from face2scene_core.errors import FaceTooSmallError
from face2scene_core.faces import (
    MIN_FACE_SIZE,
    Face,
    align_face,
    estimate_alignment,
    face_mask,
    face_template,
    get_detector,
    native_crop_box,
    native_pair,
    paste_back,
)
from face2scene_core.faces.warp import transform_points, warp_affine
from face2scene_core.imageio import load_image
from shared_data import datasets_dir

# (photo, how many of its faces to use): small/rotated faces, large faces (downscaled into 512), faces at borders
PHOTOS = [
    ("faces_identity/face-api.js/examples/images/bbt4.jpg", 3),
    ("faces_identity/dlib/examples/faces/2008_004176.jpg", 3),
    ("faces_identity/deepface/tests/unit/dataset/couple.jpg", 2),
    ("faces_real/codeformer/inputs/whole_imgs/01.jpg", 2),
]


_datasets = datasets_dir


@pytest.fixture(scope="module")
def detector():
    return get_detector()


@pytest.fixture(scope="module")
def cases(detector):
    data = _datasets()
    out = []
    for rel, k in PHOTOS:
        img = load_image(data / rel)
        for face in detector.detect(img)[:k]:
            out.append((rel.split("/")[-1], img, face, align_face(img, face)))
    return out


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_aligned_face_shape_and_landmark_round_trip(cases):
    for name, img, face, al in cases:
        assert al.image.shape == (512, 512, 3) and al.image.dtype == np.uint8
        assert al.matrix.shape == al.inverse.shape == (2, 3)
        on_template = transform_points(face.landmarks, al.matrix)
        back = transform_points(on_template, al.inverse)
        assert np.abs(back - face.landmarks).max() < 1.0, name  # round trip, photo pixels
        # a similarity fit of 5 real landmarks: within 12% of the face size of the template points
        assert np.abs(on_template - face_template(512)).max() < 0.12 * 512, name


def test_redetected_landmarks_map_back_onto_the_photo(cases, detector):
    for name, img, face, al in cases:
        again = detector.detect(al.image)
        assert again, f"{name}: no face found in the aligned image"
        mapped = transform_points(again[0].landmarks, al.inverse)
        iod = np.linalg.norm(face.landmarks[0] - face.landmarks[1])
        assert np.abs(mapped - face.landmarks).max() < 0.2 * iod, name


def test_native_pair_of_the_unchanged_face_matches_the_photo(cases):
    for name, img, face, al in cases:
        lq, hq = native_pair(img, al, al.image)
        x0, y0, x1, y1 = native_crop_box(al, img.shape)
        assert lq.shape == hq.shape == (y1 - y0, x1 - x0, 3) and lq.dtype == hq.dtype == np.uint8
        assert x1 - x0 == y1 - y0 >= MIN_FACE_SIZE
        assert 0 <= x0 and 0 <= y0 and x1 <= img.shape[1] and y1 <= img.shape[0]
        assert np.array_equal(lq, img[y0:y1, x0:x1])
        # photo -> 512 -> photo costs only interpolation error (cubic both ways, area filter when shrinking)
        assert _mad(lq, hq) < 3.0, name
        if al.native_size <= 512:  # upright faces away from the border use the whole aligned extent
            assert x1 - x0 <= al.native_size + 1


def test_native_pair_carries_the_restoration_difference(cases):
    name, img, face, al = cases[0]
    blurred = cv2.GaussianBlur(al.image, (0, 0), 8)
    lq, hq_same = native_pair(img, al, al.image)
    _, hq_blur = native_pair(img, al, blurred)
    assert _mad(lq, hq_blur) > 2 * _mad(lq, hq_same) + 1.0
    # an HQ face at another square size maps onto the same pixels
    _, hq_1024 = native_pair(img, al, cv2.resize(al.image, (1024, 1024), interpolation=cv2.INTER_CUBIC))
    assert hq_1024.shape == hq_same.shape and _mad(hq_1024, hq_same) < 1.5


def test_paste_back_of_the_unchanged_face_reproduces_the_photo(cases):
    for name, img, face, al in cases:
        out = paste_back(img, al.image, al)
        mask = face_mask(al, img.shape)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert (mask > 0.5).sum() > 0.5 * al.native_size**2 * 0.5
        assert _mad(out[mask > 0.5], img[mask > 0.5]) < 3.0, name
        assert np.array_equal(out[mask == 0], img[mask == 0]), "pixels outside the face must not change"


def test_paste_back_puts_the_new_face_where_the_mask_is(cases):
    name, img, face, al = cases[1]
    grey = np.full((512, 512, 3), 200, np.uint8)
    out = paste_back(img, grey, al, feather=0.1)
    mask = face_mask(al, img.shape, feather=0.1)
    expect = mask[..., None] * 200.0 + (1 - mask[..., None]) * img
    assert np.abs(out - expect).max() <= 1.0
    cx, cy = face.landmarks[2]
    assert mask[int(round(cy)), int(round(cx))] == pytest.approx(1.0)


def test_face_mask_is_soft_and_bounded(cases):
    name, img, face, al = cases[0]
    hard = face_mask(al, img.shape, feather=0.0)
    soft = face_mask(al, img.shape, feather=0.2)
    for m in (hard, soft):
        assert m.dtype == np.float32 and m.shape == img.shape[:2]
        assert m.min() >= 0.0 and m.max() <= 1.0
    # the hard mask covers the aligned square (side = native size), the feathered one less, with a ramp
    assert hard.sum() == pytest.approx(al.native_size**2, rel=0.08)
    assert soft.sum() < hard.sum()
    assert ((soft > 0.05) & (soft < 0.95)).sum() > 0.1 * (soft > 0).sum()
    with pytest.raises(ValueError, match="feather"):
        face_mask(al, img.shape, feather=0.8)


def test_crop_box_is_square_and_inside_for_faces_at_the_border(detector):
    img = load_image(_datasets() / "faces_identity/deepface/tests/unit/dataset/selfie-many-people.jpg")
    faces = detector.detect(img)
    edge = [f for f in faces if f.bbox[2] > img.shape[1] - 5 or f.bbox[0] < 5]
    assert edge, "the selfie has faces cut by the frame"
    for f in edge:
        al = align_face(img, f)
        x0, y0, x1, y1 = native_crop_box(al, img.shape)
        assert x1 - x0 == y1 - y0 > 0
        assert 0 <= x0 and 0 <= y0 and x1 <= img.shape[1] and y1 <= img.shape[0]
        lq, hq = native_pair(img, al, al.image)
        assert lq.shape == hq.shape and _mad(lq, hq) < 3.5


def test_too_small_face_raises_face_too_small_error(cases):
    name, img, face, al = cases[0]
    s = 24.0 / al.native_size  # shrink the photo so the face's native crop is 24 px
    small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    tiny = Face(bbox=(face.bbox + 0.5) * s - 0.5, landmarks=(face.landmarks + 0.5) * s - 0.5, score=face.score)
    with pytest.raises(FaceTooSmallError, match=r"is 2[345] px.*minimum is 32 px"):
        align_face(small, tiny)
    ok = align_face(small, tiny, min_face_size=0)  # the check can be switched off ...
    with pytest.raises(FaceTooSmallError, match="minimum is 32"):
        native_pair(small, ok, ok.image)  # ... but FaDeX's pair still refuses it


def test_alignment_argument_checks(cases):
    name, img, face, al = cases[0]
    with pytest.raises(ValueError, match="degenerate"):
        estimate_alignment(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="Face"):
        align_face(img, face.landmarks)
    with pytest.raises(ValueError, match="aligned_hq"):
        native_pair(img, al, al.image[:, :300])
    assert align_face(img, face, size=256).image.shape == (256, 256, 3)


def test_shrinking_warp_does_not_alias():
    stripes = np.zeros((400, 400), np.uint8)
    stripes[:, ::2] = 255  # 1-px stripes: any aliasing shows up as bands
    for scale in (0.25, 0.3):
        m = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])
        plain = cv2.warpAffine(stripes, m, (100, 100), flags=cv2.INTER_LINEAR)
        filtered = warp_affine(stripes, m, (100, 100))[2:-2, 2:-2]  # the border column half-samples outside
        # point sampling lands on stripes or gaps: wrong brightness (x0.25) or false bands (x0.3)
        assert abs(float(plain.mean()) - 127.5) > 100 or plain.std() > 60
        assert abs(float(filtered.mean()) - 127.5) < 3 and filtered.std() < 15
