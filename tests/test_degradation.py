"""Degradation synthesis: kernels, ops, the Real-ESRGAN pipeline, presets D1-D4, spatial blur."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from face2scene_core.config import from_dict, load_config
from face2scene_core.degradation import (
    PRESETS,
    DegradationConfig,
    DegradationParams,
    KernelParams,
    NoiseParams,
    RealESRGANDegradation,
    ResizeParams,
    SpatialBlurParams,
    StageParams,
    degrade_image,
    make_kernel,
    random_mixed_kernel,
    resize,
    spatially_varying_blur,
)
from face2scene_core.errors import ConfigError
from face2scene_core.imageio import load_image, to_float
from shared_data import datasets_dir


_datasets = datasets_dir


def _photo(name: str = "kodim04.png", folder: str = "Kodak24") -> np.ndarray:
    return to_float(load_image(_datasets() / "scenes_clean" / "ffdnet" / "testsets" / folder / name))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def _laplacian_energy(img: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    return cv2.Laplacian(grey, cv2.CV_32F) ** 2


def _moments(kernel: np.ndarray) -> np.ndarray:
    """Covariance of a kernel seen as a distribution over (x = column, y = row)."""
    half = kernel.shape[0] // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    k = kernel.astype(np.float64)
    return np.array([[np.sum(k * xx * xx), np.sum(k * xx * yy)], [np.sum(k * xx * yy), np.sum(k * yy * yy)]])


# ----------------------------------------------------------------------------- kernels

ALL_KERNELS = [
    KernelParams(kind="iso", size=21, sigma_x=2.0),
    KernelParams(kind="aniso", size=15, sigma_x=2.5, sigma_y=0.8, angle=0.6),
    KernelParams(kind="generalized_iso", size=13, sigma_x=1.5, beta=0.6),
    KernelParams(kind="generalized_aniso", size=17, sigma_x=2.0, sigma_y=1.0, angle=-1.0, beta=3.0),
    KernelParams(kind="plateau_iso", size=11, sigma_x=1.2, beta=1.5),
    KernelParams(kind="plateau_aniso", size=19, sigma_x=2.2, sigma_y=0.9, angle=2.0, beta=1.2),
    KernelParams(kind="sinc", size=13, omega=math.pi / 3),
]


@pytest.mark.parametrize("params", ALL_KERNELS, ids=lambda p: p.kind)
def test_kernel_shape_sum_and_point_symmetry(params):
    k = make_kernel(params)
    assert k.shape == (params.size, params.size) and k.dtype == np.float32
    assert abs(float(k.sum()) - 1.0) < 1e-5
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-7)  # every kernel here is point symmetric
    assert np.unravel_index(np.argmax(k), k.shape) == (params.size // 2, params.size // 2)
    if params.isotropic:  # rotation invariant: mirror and transpose symmetric
        np.testing.assert_allclose(k, k.T, atol=1e-7)
        np.testing.assert_allclose(k, k[:, ::-1], atol=1e-7)


def test_isotropic_vs_anisotropic_gaussian_covariance():
    iso = _moments(make_kernel(KernelParams(kind="iso", size=31, sigma_x=2.0)))
    np.testing.assert_allclose(iso, np.diag([4.0, 4.0]), atol=1e-3)  # untruncated: Sigma = sigma^2 I

    angle = 0.6
    aniso = make_kernel(KernelParams(kind="aniso", size=31, sigma_x=3.0, sigma_y=1.0, angle=angle))
    assert not np.allclose(aniso, aniso.T, atol=1e-4)
    evals, evecs = np.linalg.eigh(_moments(aniso))
    np.testing.assert_allclose(evals, [1.0, 9.0], rtol=1e-3)
    major = evecs[:, 1]  # (x, y) direction of the largest spread
    assert abs(math.atan2(major[1], major[0]) % math.pi - angle) < 1e-3  # an axis: direction modulo pi


def test_kernel_families_differ_in_shape():
    gauss = make_kernel(KernelParams(kind="iso", size=21, sigma_x=2.0))
    heavy = make_kernel(KernelParams(kind="generalized_iso", size=21, sigma_x=2.0, beta=0.5))
    flat = make_kernel(KernelParams(kind="generalized_iso", size=21, sigma_x=2.0, beta=4.0))
    plateau = make_kernel(KernelParams(kind="plateau_iso", size=21, sigma_x=2.0, beta=1.0))
    sinc = make_kernel(KernelParams(kind="sinc", size=21, omega=math.pi / 4))
    c = 10
    def tail(k: np.ndarray, r: int) -> float:  # value r pixels from the centre, relative to the peak
        return float(k[c, c + r] / k[c, c])

    assert tail(heavy, 6) > tail(gauss, 6) > tail(flat, 6)  # beta < 1: heavy tails; beta > 1: flat top
    assert tail(flat, 1) > tail(gauss, 1)
    assert tail(plateau, 10) > 100 * tail(gauss, 10)  # plateau decays polynomially
    assert sinc.min() < 0  # ringing lobes
    assert gauss.min() >= 0 and plateau.min() >= 0


def test_bad_kernel_params_raise_naming_the_value():
    with pytest.raises(ValueError, match="odd"):
        KernelParams(kind="iso", size=8, sigma_x=1.0)
    with pytest.raises(ValueError, match="sigma_x"):
        KernelParams(kind="aniso", size=7, sigma_x=0.0, sigma_y=1.0)
    with pytest.raises(ValueError, match="omega"):
        KernelParams(kind="sinc", size=7, omega=4.0)
    with pytest.raises(ValueError, match="isotropic"):
        KernelParams(kind="iso", size=7, sigma_x=1.0, sigma_y=2.0)


def test_random_mixed_kernel_follows_probabilities_and_ranges():
    cfg = DegradationConfig()
    rng = np.random.default_rng(0)
    draws = [
        random_mixed_kernel(
            rng, size=7, kernel_list=cfg.kernel_list, kernel_prob=cfg.kernel_prob, sigma_range=cfg.blur_sigma,
            rotation_range=cfg.rotation_range, betag_range=cfg.betag_range, betap_range=cfg.betap_range,
        )
        for _ in range(4000)
    ]
    freq = np.array([sum(d.kind == k for d in draws) for k in cfg.kernel_list]) / len(draws)
    np.testing.assert_allclose(freq, cfg.kernel_prob, atol=0.025)
    assert all(0.2 <= d.sigma_x <= 3.0 and 0.2 <= d.sigma_y <= 3.0 for d in draws)
    assert all(d.sigma_x == d.sigma_y and d.angle == 0.0 for d in draws if d.isotropic)
    gen = [d.beta for d in draws if d.kind.startswith("generalized")]
    assert min(gen) >= 0.5 and max(gen) <= 4.0 and 0.3 < np.mean(np.array(gen) < 1) < 0.7
    assert all(1.0 <= d.beta <= 2.0 for d in draws if d.kind.startswith("plateau"))


# ----------------------------------------------------------------------------- sampling


def test_sampled_params_stay_in_real_esrgan_ranges():
    deg = RealESRGANDegradation()
    rng = np.random.default_rng(123)
    ps = [deg.sample(rng) for _ in range(600)]
    for p in ps:
        assert 0.15 <= p.stage1.resize.scale <= 1.5 and 0.3 <= p.stage2.resize.scale <= 1.2
        assert 30 <= p.stage1.jpeg_quality <= 95 and 30 <= p.stage2.jpeg_quality <= 95
        assert p.stage1.blur.size in range(7, 22, 2)
        assert p.stage1.noise is not None and len(p.stage1.noise.kinds) == 1
        if p.stage1.noise.gaussian_sigma:
            assert 1 <= p.stage1.noise.gaussian_sigma <= 30
        else:
            assert 0.05 <= p.stage1.noise.poisson_scale <= 3.0
        if p.final_sinc is not None:
            assert math.pi / 3 <= p.final_sinc.omega <= math.pi
        assert p.scale == 4 and p.spatial_blur is None
    assert 0.74 < np.mean([p.final_sinc is not None for p in ps]) < 0.86
    assert 0.74 < np.mean([p.stage2.blur is not None for p in ps]) < 0.86
    assert 0.4 < np.mean([p.final_order == "resize_first" for p in ps]) < 0.6
    assert 0.6 < np.mean([p.stage1.resize.scale < 1 for p in ps]) < 0.8  # resize_prob down = 0.7


def test_same_seed_identical_bytes_different_seed_different():
    img = _photo()[:160, :192]
    deg = RealESRGANDegradation()
    a = deg.apply(img, deg.sample(np.random.default_rng(42)))
    b = deg.apply(img, deg.sample(np.random.default_rng(42)))
    c = deg.apply(img, deg.sample(np.random.default_rng(43)))
    assert a.dtype == np.float32 and a.shape == img.shape
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes() and _psnr(a, c) < 45


def test_apply_is_pure_in_params_noise_seed_drives_noise():
    img = _photo()[:128, :128]
    p = DegradationParams(
        stage1=StageParams(noise=NoiseParams(gaussian_sigma=15.0)), stage2=StageParams(), noise_seed=5
    )
    deg = RealESRGANDegradation()
    first = deg.apply(img, p, keep_size=False)
    second = RealESRGANDegradation(DegradationConfig(scale=2)).apply(img, p, keep_size=False)  # config is irrelevant
    assert first.tobytes() == second.tobytes()
    other = deg.apply(img, DegradationParams.from_dict({**p.to_dict(), "noise_seed": 6}), keep_size=False)
    assert first.tobytes() != other.tobytes()


def test_params_json_round_trip_reproduces_output():
    img = _photo("kodim19.png")[:200, :144]
    deg = RealESRGANDegradation(DegradationConfig(spatial_blur_prob=0.5))
    rng = np.random.default_rng(7)
    for _ in range(3):
        p = deg.sample(rng)
        text = json.dumps(p.to_dict())
        q = DegradationParams.from_dict(json.loads(text))
        assert q == p
        assert deg.apply(img, q).tobytes() == deg.apply(img, p).tobytes()


def test_params_from_dict_rejects_bad_input_with_config_error():
    good = PRESETS["D1"].to_dict()
    with pytest.raises(ConfigError, match="unknown"):
        DegradationParams.from_dict({**good, "sigma": 3})
    bad = json.loads(json.dumps(good))
    bad["stage1"]["jpeg_quality"] = 150
    with pytest.raises(ConfigError, match="jpeg_quality"):
        DegradationParams.from_dict(bad)


def test_config_loads_from_dict_and_yaml_and_rejects_bad_values(tmp_path):
    cfg = from_dict(DegradationConfig, {"jpeg_range": [60, 70], "scale": 2})
    assert cfg.jpeg_range == (60.0, 70.0) and cfg.scale == 2
    path = tmp_path / "deg.yaml"
    path.write_text("final_sinc_prob: 0.0\nresize_prob: [0, 0, 1]\n")
    cfg = load_config(DegradationConfig, path, ["jpeg_range2=[90, 95]"])
    p = RealESRGANDegradation(cfg).sample(np.random.default_rng(0))
    assert p.final_sinc is None and p.stage1.resize.scale == 1.0 and 90 <= p.stage2.jpeg_quality <= 95
    with pytest.raises(ConfigError, match="sinc_prob"):
        from_dict(DegradationConfig, {"sinc_prob": 1.5})
    with pytest.raises(ConfigError, match="kernel_prob"):
        from_dict(DegradationConfig, {"kernel_prob": [1.0]})
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(DegradationConfig, {"blur_sigma3": [1, 2]})


# ----------------------------------------------------------------------------- applying


def test_keep_size_shapes_and_output_grid():
    img = _photo()[:123, :77]
    deg = RealESRGANDegradation()
    p = deg.sample(np.random.default_rng(1))
    full = deg.apply(img, p)
    small = deg.apply(img, p, keep_size=False)
    assert full.shape == (123, 77, 3) and small.shape == (31, 19, 3)
    for out in (full, small):
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
        np.testing.assert_array_equal(np.round(out * 255) / 255, out)  # on 1/255 steps
    tiny = deg.apply(img[:3, :5], PRESETS["D2"])  # a few pixels never crash
    assert tiny.shape == (3, 5, 3)


def test_degrade_image_uint8_and_input_validation():
    img_u8 = load_image(_datasets() / "scenes_clean" / "ffdnet" / "testsets" / "Kodak24" / "kodim04.png")[:96, :96]
    out = degrade_image(img_u8, PRESETS["D3"])
    assert out.dtype == np.uint8 and out.shape == img_u8.shape
    ref = RealESRGANDegradation().apply(to_float(img_u8), PRESETS["D3"])
    np.testing.assert_array_equal(out, np.round(ref * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="float"):
        RealESRGANDegradation().apply(img_u8, PRESETS["D3"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        RealESRGANDegradation().apply(to_float(img_u8) * 255, PRESETS["D3"])
    with pytest.raises(ValueError, match="Generator"):
        RealESRGANDegradation().sample(42)


def test_same_operator_on_a_crop_equals_crop_of_degraded_scene():
    """Translation consistency: the face crop gets the scene's degradation (noise/JPEG-free operator)."""
    img = _photo("kodim23.png")[:384, :384]
    p = DegradationParams(
        stage1=StageParams(
            blur=KernelParams(kind="aniso", size=21, sigma_x=2.0, sigma_y=0.7, angle=0.5),
            resize=ResizeParams(scale=0.5, mode="area"),
        ),
        stage2=StageParams(
            blur=KernelParams(kind="plateau_iso", size=11, sigma_x=1.0, beta=1.5),
            resize=ResizeParams(scale=1.0, mode="bicubic"),
        ),
        final_sinc=KernelParams(kind="sinc", size=15, omega=1.5),
        final_resize_mode="bilinear",
    )
    deg = RealESRGANDegradation()
    full = deg.apply(img, p)
    margin = 40  # blur supports + resampling taps through the chain
    for y0, x0, h, w in [(64, 96, 193, 157), (128, 32, 201, 250)]:  # offsets on the 1/scale grid, any size
        crop = deg.apply(img[y0:y0 + h, x0:x0 + w], p)
        ref = full[y0:y0 + h, x0:x0 + w]
        diff = np.abs(crop - ref)[margin:-margin, margin:-margin]
        assert diff.max() <= 1.0 / 255 + 1e-6 and diff.mean() < 1e-3
        assert np.abs(crop - ref).max() > 2.0 / 255  # only the borders differ (the check can fail)
    # an offset off the LR grid only shifts the resampling phase
    crop = deg.apply(img[61:253, 93:253], p)
    assert _psnr(crop[margin:-margin, margin:-margin], full[61:253, 93:253][margin:-margin, margin:-margin]) > 45


def test_resize_area_average_and_identity():
    rng = np.random.default_rng(0)
    x = rng.random((12, 8, 3), dtype=np.float32)
    down = resize(x, 0.5, "area")
    np.testing.assert_allclose(down, x.reshape(6, 2, 4, 2, 3).mean(axis=(1, 3)), atol=1e-6)
    for mode in ("area", "bilinear", "bicubic"):
        np.testing.assert_array_equal(resize(x, 1.0, mode), x)
        flat = np.full((9, 7, 3), 0.3, np.float32)
        np.testing.assert_allclose(resize(flat, 1.7, mode), 0.3, atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        resize(x, 2.0, "nearest")


# ----------------------------------------------------------------------------- presets


@pytest.fixture(scope="module")
def preset_outputs():
    imgs = [_photo("kodim04.png")[:256, :256], _photo("kodim23.png")[100:356, 100:356]]
    deg = RealESRGANDegradation()
    return imgs, {name: [deg.apply(im, p) for im in imgs] for name, p in PRESETS.items()}


def test_presets_are_deterministic_and_distinct(preset_outputs):
    imgs, outs = preset_outputs
    assert list(PRESETS) == ["D1", "D2", "D3", "D4"]
    deg = RealESRGANDegradation()
    for name, p in PRESETS.items():
        assert deg.apply(imgs[0], p).tobytes() == outs[name][0].tobytes()
        assert DegradationParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    flat = {name: o[0].tobytes() for name, o in outs.items()}
    assert len(set(flat.values())) == 4


def test_preset_severity_order(preset_outputs):
    imgs, outs = preset_outputs
    for i, img in enumerate(imgs):
        psnr = {name: _psnr(o[i], img) for name, o in outs.items()}
        sharp = {name: float(_laplacian_energy(o[i]).mean()) for name, o in outs.items()}
        assert max(psnr, key=psnr.get) == "D3", psnr  # almost clean
        assert sharp["D1"] < 0.5 * sharp["D3"], sharp  # strong blur + strong downscale
        assert sharp["D1"] == min(sharp.values()), sharp  # the blurriest
    # D2 and D4 carry the JPEG/noise artifacts: more high-frequency error than D1 relative to its blur
    resid = {name: float(np.std(o[0] - cv2.GaussianBlur(o[0], (0, 0), 1.0))) for name, o in outs.items()}
    assert resid["D2"] > resid["D1"] and resid["D4"] > resid["D1"], resid


# ----------------------------------------------------------------------------- spatial blur


def test_spatially_varying_blur_sharper_at_centre_than_corners():
    img = _photo("kodim23.png")
    out = spatially_varying_blur(img, sigma_center=0.3, sigma_corner=3.0, kernel_size=21)
    assert out.shape == img.shape and out.dtype == np.float32
    before, after = _laplacian_energy(img), _laplacian_energy(out)
    h, w = img.shape[:2]
    b = h // 5

    def kept(ys: slice, xs: slice) -> float:  # fraction of the Laplacian energy that survives
        return float(after[ys, xs].mean() / before[ys, xs].mean())

    centre = kept(slice(h // 2 - b, h // 2 + b), slice(w // 2 - b, w // 2 + b))
    corners = [kept(ys, xs) for ys in (slice(0, b), slice(h - b, h)) for xs in (slice(0, b), slice(w - b, w))]
    assert centre > 0.3 and max(corners) < 0.25 * centre, (centre, corners)


def test_spatially_varying_blur_uniform_limit_and_region():
    img = _photo("kodim19.png")[:200, :240]
    same = spatially_varying_blur(img, sigma_center=1.5, sigma_corner=1.5, kernel_size=11)
    ref = cv2.filter2D(img, -1, make_kernel(KernelParams(kind="iso", size=11, sigma_x=1.5)),
                       borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(same, ref, atol=1e-5)
    full = spatially_varying_blur(img, sigma_center=0.2, sigma_corner=2.5)
    y0, x0 = 40, 60
    crop = spatially_varying_blur(img[y0:y0 + 120, x0:x0 + 140], sigma_center=0.2, sigma_corner=2.5,
                                  region=(x0, y0, 240, 200))
    np.testing.assert_allclose(crop[12:-12, 12:-12], full[y0 + 12:y0 + 108, x0 + 12:x0 + 128], atol=1e-6)


def test_pipeline_spatial_blur_flag():
    img = _photo("kodim23.png")[:256, :256]
    deg = RealESRGANDegradation(DegradationConfig(spatial_blur_prob=1.0))
    p = deg.sample(np.random.default_rng(2))
    assert isinstance(p.spatial_blur, SpatialBlurParams) and p.stage1.blur is None
    assert DegradationConfig().spatial_blur_prob == 0.0
    # a noise/JPEG-free operator with only the spatial blur: the corners lose more detail than the centre
    q = DegradationParams(
        stage1=StageParams(), stage2=StageParams(), scale=1,  # scale 1: no final down-scaling
        spatial_blur=SpatialBlurParams(sigma_center=0.2, sigma_corner=3.0),
    )
    out = deg.apply(img, q)
    before, after = _laplacian_energy(img), _laplacian_energy(out)
    centre = after[96:160, 96:160].mean() / before[96:160, 96:160].mean()
    corner = after[:48, :48].mean() / before[:48, :48].mean()
    assert centre > 3 * corner
