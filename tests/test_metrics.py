import math
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from face2scene_core.imageio import load_image
from face2scene_core.evaluation.metrics import face_excluded, mean_ci, psnr, ssim
from face2scene_core.training.data import default_datasets_dir

DATA = default_datasets_dir()  # shared/datasets beside the checkout, $FACE2SCENE_DATASETS, or beside its origin


@pytest.fixture(scope="module")
def photo():
    return load_image(DATA / "scenes_clean/ffdnet/testsets/Kodak24/kodim04.png")


def test_psnr_known_value(photo):
    noisy = np.clip(photo.astype(np.int16) + 5, 0, 255).astype(np.uint8)
    # a constant offset of 5 on unclipped pixels: MSE is at most 25 -> PSNR at least 34.15 dB (RGB)
    assert psnr(photo, noisy, channel="rgb") >= 10 * math.log10(255**2 / 25) - 1e-9
    assert psnr(photo, photo) == math.inf


def test_ssim_matches_reference_implementation_and_orders_quality(photo):
    rng = np.random.default_rng(0)
    light = np.clip(photo + rng.normal(0, 5, photo.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(photo + rng.normal(0, 25, photo.shape), 0, 255).astype(np.uint8)
    assert ssim(photo, light) > ssim(photo, heavy)
    ref = structural_similarity(photo, light, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=255)
    assert abs(ssim(photo, light, channel="rgb") - ref) < 0.01


def test_face_excluded_pastes_ground_truth_inside_mask(photo):
    out = np.zeros_like(photo)
    mask = np.zeros(photo.shape[:2], np.float32)
    mask[100:200, 100:200] = 1
    comp = face_excluded(out, photo, mask)
    assert np.array_equal(comp[100:200, 100:200], photo[100:200, 100:200])
    assert comp[:100].max() == 0


def test_mean_ci():
    r = mean_ci([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["ci95"][0] < 2.0 < r["ci95"][1]
    with pytest.raises(ValueError):
        mean_ci([])
