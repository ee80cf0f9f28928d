"""The face check (face2scene_core.face_check): the Ref-FR face decides how much of the restorer's correction a
photo gets. Real held-out photos, the shipped models."""

from __future__ import annotations

import numpy as np
import pytest

from face2scene_core.face_check import apply_strength, face_check
from shared_data import datasets_dir


@pytest.fixture(scope="module")
def face():
    """A held-out photo (0.25 MP) degraded by D3, its face, Ref-FR face and tokens, and the pipeline."""
    datasets_dir()
    from face2scene_core.degradation.families import benchmark_grid
    from face2scene_core.evaluation.photos import _apply, select_photos
    from face2scene_core.pipeline import Face2ScenePipeline, _Timer

    pipe = Face2ScenePipeline.from_paths(device="cpu")
    photo = select_photos(1, max_pixels=250_000)[0]
    grid = {op.name: op for op in benchmark_grid()}
    lq = _apply(photo.image, grid["D3"])
    timer, report = _Timer(), {}
    f, refs = pipe.choose_face(lq, list(photo.refs), "reference", timer, report)
    tokens, hq, aligned, _ = pipe.degradation_tokens(lq, f, refs, timer, report)
    return {"pipe": pipe, "photo": photo, "lq": lq, "hq": hq, "aligned": aligned, "tokens": tokens, "grid": grid}


def _with_face_change(face, c: float) -> np.ndarray:
    """The degraded photo with its native face crop replaced by ``L + c (R - L)`` (R: the Ref-FR face there)."""
    from face2scene_core.faces.align import native_crop_box, native_pair

    lq, ref = native_pair(face["lq"], face["aligned"], face["hq"])
    x0, y0, x1, y1 = native_crop_box(face["aligned"], face["lq"].shape)
    out = face["lq"].copy()
    L = lq.astype(np.float64)
    out[y0:y1, x0:x1] = np.clip(L + c * (ref.astype(np.float64) - L) + 0.5, 0, 255).astype(np.uint8)
    return out


@pytest.mark.parametrize("c, strength", [(2.0, 0.5), (4.0, 0.25), (0.5, 1.0), (-1.0, 0.0)])
def test_strength_is_the_share_of_the_correction_that_brings_the_face_closest_to_the_reffr_face(face, c, strength):
    verdict = face_check(face["lq"], _with_face_change(face, c), face["aligned"], face["hq"])
    assert verdict.strength == pytest.approx(strength, abs=0.03)  # rounding to 8 bits moves it a little
    assert verdict.agreement == pytest.approx(np.sign(c), abs=0.1)  # cosine of the two changes


def test_a_restore_that_changes_nothing_keeps_strength_one(face):
    verdict = face_check(face["lq"], face["lq"].copy(), face["aligned"], face["hq"])
    assert verdict.strength == 1.0 and verdict.change == 0.0


def test_apply_strength_blends_in_strips_and_keeps_the_depth():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 65536, (1100, 37, 3), dtype=np.uint16)
    out = rng.integers(0, 65536, (1100, 37, 3), dtype=np.uint16)
    half = apply_strength(src, out, 0.5, rows=256)
    ref = np.clip(src.astype(np.float64) + 0.5 * (out.astype(np.float64) - src) + 0.5, 0, 65535).astype(np.uint16)
    assert half.dtype == np.uint16 and np.abs(half.astype(np.int64) - ref).max() <= 1
    assert np.array_equal(apply_strength(src, out, 0.0), src) and apply_strength(src, out, 1.0) is out
    with pytest.raises(ValueError, match="strength must be in"):
        apply_strength(src, out, 1.5)
    with pytest.raises(ValueError, match="differ"):
        apply_strength(src[:10], out, 0.5)


def test_the_pipeline_reports_and_applies_the_face_check_and_can_be_turned_off(face):
    pipe, photo = face["pipe"], face["photo"]
    checked = pipe(face["lq"], list(photo.refs))
    raw = pipe(face["lq"], list(photo.refs), face_check=False)
    verdict = checked.report["face_check"]
    assert "face_check" not in raw.report
    assert 0.0 <= verdict["strength"] <= 1.0
    expected = apply_strength(face["lq"], raw.image, verdict["strength"])
    assert np.abs(checked.image.astype(int) - expected.astype(int)).max() <= 1
    # a photo restored with a code that is not its own face's gets the whole correction, and says why
    code = pipe.code(face["lq"], list(photo.refs))
    coded = pipe(face["lq"], list(photo.refs), code=code, code_use="always")
    assert coded.report["face_check"].startswith("not applied")
