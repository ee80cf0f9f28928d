"""Native-scale degradation families, the motion kernel and the benchmark grid (face2scene_core.degradation.families)."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from face2scene_core.degradation import KernelParams, apply_degradation, make_kernel
from face2scene_core.degradation.families import (
    DEFAULT_FAMILY_WEIGHTS,
    FAMILIES,
    PhotoDegradation,
    PhotoDegradationConfig,
    benchmark_grid,
    build_degradation,
    motion_blur,
    photo_op,
)
from face2scene_core.errors import ConfigError
from face2scene_core.imageio import load_image, to_float, to_uint8
from face2scene_core.evaluation.metrics import psnr
from tests.shared_data import datasets_dir


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_image(datasets_dir() / "scenes_clean/ffdnet/testsets/Kodak24/kodim04.png")


def test_motion_kernel_is_a_centred_line_along_its_angle():
    k = make_kernel(KernelParams(kind="motion", size=11, sigma_x=9.0, angle=0.0))
    assert k.shape == (11, 11) and math.isclose(float(k.sum()), 1.0, rel_tol=1e-5)
    assert np.allclose(k, k[::-1, ::-1], atol=1e-6)  # point-symmetric about the centre
    row = k[5]
    assert row.sum() > 0.99 and (row > 0).sum() == 9  # all mass on the middle row, 9 px long
    kv = make_kernel(KernelParams(kind="motion", size=11, sigma_x=9.0, angle=math.pi / 2))
    assert np.allclose(kv, k.T, atol=1e-6)  # 90 degrees: a vertical line
    with pytest.raises(ValueError, match="motion kernel length"):
        KernelParams(kind="motion", size=7, sigma_x=9.0)


def test_clean_operator_returns_the_photo_bit_for_bit(photo):
    out = to_uint8(apply_degradation(to_float(photo), photo_op()))
    assert np.array_equal(out, photo)
    deg = PhotoDegradation()
    assert deg.is_identity(photo_op()) and deg.is_identity(photo_op(noise_seed=7))
    assert not deg.is_identity(photo_op(jpeg=90))


def test_grid_is_fixed_covers_every_family_and_keeps_the_size(photo):
    grid, again = benchmark_grid(), benchmark_grid()
    assert [o.name for o in grid] == [o.name for o in again]
    assert [o.params for o in grid] == [o.params for o in again]
    assert len(grid) == 19 and len({o.name for o in grid}) == 19
    assert {o.family for o in grid} == set(FAMILIES)
    small = photo[:160, :240]
    scores = {}
    for op in grid:
        out = to_uint8(apply_degradation(to_float(small), op.params))
        assert out.shape == small.shape
        scores[op.name] = psnr(out, small)
    assert math.isinf(scores["clean"])
    assert all(v < 60 for k, v in scores.items() if k != "clean")
    # mild operators stay mild, strong ones are strong
    assert scores["jpeg_q60"] > scores["jpeg_q30"] > scores["D1"]
    assert scores["blur_s1"] > scores["blur_s2_jpeg40"]
    assert scores["x2_noise5_jpeg50"] > scores["x4_noise3_jpeg70"] - 3


def test_training_mixture_follows_its_weights_and_is_seeded():
    deg = PhotoDegradation()
    rng = np.random.default_rng(0)
    counts = collections.Counter(deg.sample_family(rng)[0] for _ in range(2000))
    for fam, w in DEFAULT_FAMILY_WEIGHTS.items():
        assert abs(counts.get(fam, 0) / 2000 - w) < 0.04, (fam, counts)
    assert counts.get("preset", 0) == 0  # D1-D4 stay unseen in training
    a = [deg.sample(np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]
    only_jpeg = PhotoDegradation(PhotoDegradationConfig(family_weights={"jpeg": 1.0}))
    p = only_jpeg.sample(np.random.default_rng(1))
    assert p.stage2.jpeg_quality is not None and p.stage1.blur is None and p.scale == 1


def test_build_degradation_names_bad_settings():
    assert isinstance(build_degradation("photo"), PhotoDegradation)
    with pytest.raises(ConfigError, match="operators must be one of"):
        build_degradation("fancy")
    with pytest.raises(ConfigError, match="unknown degradation families"):
        build_degradation("photo", {"family_weights": {"snow": 1.0}})


def test_fadex_sampler_gives_every_clean_draw_one_label():
    from face2scene_core.fadex.data import FacePairSampler

    faces = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(4)]
    deg = PhotoDegradation(PhotoDegradationConfig(family_weights={"clean": 0.5, "jpeg": 0.5}))
    sampler = FacePairSampler(faces, crop_size=32, ops_per_batch=6, images_per_op=2, degradation=deg, seed=0)
    labels, clean_labels = [], set()
    for _ in range(4):
        batch = sampler.sample_batch()
        for lab, op in zip(batch.labels[::2], batch.ops):
            labels.append(int(lab))
            if deg.is_identity(op):
                clean_labels.add(int(lab))
    assert len(clean_labels) == 1  # one operator, however often drawn
    jpeg_labels = [lab for lab in labels if lab not in clean_labels]
    assert len(set(jpeg_labels)) == len(jpeg_labels)  # every JPEG draw is its own operator
    state = sampler.state_dict()
    assert state["identity_label"] == next(iter(clean_labels))


def test_motion_blur_and_photo_op_validate():
    assert motion_blur(5.0, 0.3).size >= 6
    with pytest.raises(ValueError, match="scale must be"):
        photo_op(scale=8)
