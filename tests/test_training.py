"""Stage-2 training: losses, discriminator, data sampling and the trainer, on the tiny config (CPU, seconds).

Real photos come from ``../shared/datasets`` (CI clones the repo with ``shared/`` beside it) or
``$FACE2SCENE_DATASETS``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from face2scene_core.config import load_config
from face2scene_core.errors import ArchitectureMismatchError, ConfigError, MissingBackboneError, WeightsNotFoundError
from face2scene_core.imageio import load_image, to_uint8
from face2scene_core.training.data import Stage2Data, Stage2DataConfig, _resize
from face2scene_core.training.losses import LPIPSLoss, discriminator_loss, generator_loss, vgg16_features
from face2scene_core.training.stage2 import Stage2Config, Stage2Trainer, train_restorer
from shared_data import datasets_dir

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "restorer_tiny.yaml"
SPLIT = REPO / "configs" / "split.json"


_datasets = datasets_dir


DATA = _datasets()
CBSD68 = DATA / "scenes_clean/ffdnet/testsets/CBSD68"
FFHQ = DATA / "faces_ffhq/daps_test/dataset/demo-ffhq"


class NoFaces:
    """Detector stub: every scene is faceless, so the face pair comes from the pool (fast, no ONNX)."""

    def detect(self, image):
        return []


@pytest.fixture(scope="module")
def fadex_dir(tmp_path_factory) -> Path:
    from face2scene_core.fadex.model import FaDeX

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("fadex")
    FaDeX(channels=(8, 16), blocks_per_stage=(1, 1), embed_dim=8, proj_hidden=16).save_pretrained(str(folder))
    return folder


def tiny_cfg(out: Path, fadex: Path, *overrides: str) -> Stage2Config:
    scenes = [str(CBSD68 / "1*.png")]
    pool = [str(FFHQ / "0000?.png")]
    return load_config(Stage2Config, TINY, [
        f"output_dir={out}", f"fadex={fadex}", f"data.split_file={SPLIT}",
        f"data.scenes={json.dumps(scenes)}", f"data.face_pool={json.dumps(pool)}", *overrides,
    ])


def _history(out: Path) -> dict:
    return json.loads((out / "loss_history.json").read_text())


# ---------------------------------------------------------------------------------------------- losses
@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg16_features.safetensors"
    save_file({k: v.contiguous() for k, v in vgg16_features().state_dict().items()}, str(path))
    return path


def test_lpips_matches_reference_package(vgg_file):
    lpips = pytest.importorskip("lpips")
    ours = LPIPSLoss(vgg_file, reduction="none")
    ref = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()  # random trunk, wheel heads: no download
    trunk = {k: v for k, v in load_file(str(vgg_file)).items()}
    for i in range(1, 6):
        sl = getattr(ref.net, f"slice{i}")
        sl.load_state_dict({k: trunk[k] for k in sl.state_dict()})
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 48, 48, generator=g), torch.rand(2, 3, 48, 48, generator=g)
    with torch.no_grad():
        expected = ref(a * 2 - 1, b * 2 - 1).flatten()
    torch.testing.assert_close(ours(a, b), expected, rtol=1e-4, atol=1e-6)
    assert torch.all(ours(a, a) == 0)
    pred = a.clone().requires_grad_(True)
    LPIPSLoss(vgg_file)(pred, b).backward()
    assert pred.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in ours.parameters())


def test_lpips_errors_name_the_missing_file(tmp_path, vgg_file):
    with pytest.raises(MissingBackboneError, match="lpips_backbone"):
        LPIPSLoss(None)
    with pytest.raises(WeightsNotFoundError):
        LPIPSLoss(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    save_file({"0.weight": torch.zeros(8, 3, 3, 3)}, str(bad))
    with pytest.raises(ArchitectureMismatchError):
        LPIPSLoss(bad)


def test_gan_losses_push_the_right_way():
    real, fake = torch.full((4,), 2.0), torch.full((4,), -2.0)
    assert discriminator_loss(real, fake, "hinge") == 0  # a confident, correct discriminator pays nothing
    assert discriminator_loss(fake, real, "hinge") > discriminator_loss(real, fake, "hinge")
    assert generator_loss(fake, "ns") > generator_loss(real, "ns")
    with pytest.raises(ValueError, match="wgan"):
        generator_loss(fake, "wgan")


# ---------------------------------------------------------------------------------------------- data
def _data(tmp_path, **kw) -> Stage2Data:
    cfg = Stage2DataConfig(
        scenes=[str(CBSD68 / "1*.png")], face_pool=[str(FFHQ / "0000?.png")], split_file=str(SPLIT),
        crop_sizes=[64], scale_range=(0.3, 0.5), pool_face_sizes=(32, 48), **kw.pop("cfg", {}),
    )
    return Stage2Data(cfg, batch_size=2, seed=3, cache_dir=tmp_path, **kw)


def test_pool_face_and_scene_share_one_operator(tmp_path):
    data = _data(tmp_path, detector=NoFaces())
    s = data.batch(0).samples[0]
    assert s.face_source == "pool" and s.lq.shape == s.hq.shape == (64, 64, 3)
    # both LQ images are exactly the recorded operator applied to their clean versions
    np.testing.assert_array_equal(data.degrade(to_uint8(s.face_hq), s.params), s.face_lq)
    np.testing.assert_array_equal(data.degrade(to_uint8(s.hq), s.params), s.lq)
    # and another operator gives another face: the check above can fail
    other = data.degradation.sample(np.random.default_rng(12345))
    assert not np.array_equal(data.degrade(to_uint8(s.face_hq), other), s.face_lq)
    # the hq_fn hook (e.g. a Ref-FR) replaces the ground-truth face, and sees the LQ face of the same operator
    seen = []

    def hq_fn(lq, gt):
        seen.append(lq)
        return gt[:, ::-1].copy()

    hooked = _data(tmp_path, detector=NoFaces(), hq_fn=hq_fn).batch(0).samples[0]
    np.testing.assert_array_equal(to_uint8(hooked.face_hq), to_uint8(s.face_hq)[:, ::-1])
    np.testing.assert_array_equal(seen[0], to_uint8(s.face_lq))


def test_scene_face_pair_cut_from_the_same_degraded_region(tmp_path):
    scene = DATA / "scenes_clean/denoising_datasets/CSet14/man.png"  # a train-split portrait
    calls = []

    class Counting:
        def __init__(self):
            from face2scene_core.faces.detect import get_detector

            self.det = get_detector("retinaface", score_threshold=0.8)

        def detect(self, img):
            calls.append(img.shape)
            return self.det.detect(img)

    cfg = dict(scenes=[str(scene)], scale_range=(0.8, 1.0), max_face=96)
    data = Stage2Data(Stage2DataConfig(face_pool=[str(FFHQ / "0000?.png")], split_file=str(SPLIT), crop_sizes=[64],
                                       pool_face_sizes=(32, 48), **cfg), batch_size=2, seed=0, cache_dir=tmp_path,
                      detector=Counting())
    s = data.batch(0).samples[0]
    assert s.face_source == "scene" and len(calls) == 1
    clean = _resize(load_image(scene), s.scale)
    x0, y0, x1, y1 = s.region_box
    lq_region = data.degrade(clean[y0:y1, x0:x1], s.params)
    fx0, fy0, fx1, fy1 = s.face_box
    assert 32 <= fx1 - fx0 <= 96 and fx1 - fx0 == fy1 - fy0
    np.testing.assert_array_equal(lq_region[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0], s.face_lq)
    cx0, cy0, cx1, cy1 = s.crop_box
    np.testing.assert_array_equal(lq_region[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0], s.lq)
    np.testing.assert_array_equal(clean[fy0:fy1, fx0:fx1], to_uint8(s.face_hq))
    # boxes are cached next to the run: a new sampler never calls the detector
    assert json.loads((tmp_path / "face_boxes.json").read_text())[str(scene.resolve())]["faces"]

    class Fail:
        def detect(self, img):
            raise AssertionError("detector called despite the cache")

    again = Stage2Data(data.cfg, batch_size=2, seed=0, cache_dir=tmp_path, detector=Fail())
    assert again.batch(0).samples[0].face_box == s.face_box


def test_reffr_hq_faces_are_what_the_pipeline_computes(tmp_path):
    """data.reffr_prob 1: FaDeX's HQ face is the shipped Ref-FR's output (resized to reffr_size and back), not the
    ground truth: a clean face comes back almost as it is, a noisy one is denoised but not made equal to the GT."""
    from face2scene_core.degradation import apply_degradation
    from face2scene_core.degradation.families import photo_op
    from face2scene_core.degradation.params import NoiseParams

    class Fixed:  # one operator for every sample
        def __init__(self, params):
            self.params = params

        def sample(self, rng):
            return self.params

        def apply(self, img, params):
            return apply_degradation(img, params)

    clean = _data(tmp_path, detector=NoFaces(), degradation=Fixed(photo_op()), cfg={"reffr_prob": 1.0})
    s = clean.batch(0).samples[0]
    lq8 = (s.face_lq * 255).round().astype(np.uint8)
    size = clean.cfg.reffr_size  # what resizing a 32-48 px face to the Ref-FR's size and back costs by itself
    trip = cv2.resize(cv2.resize(lq8, (size, size), interpolation=cv2.INTER_CUBIC), lq8.shape[1::-1],
                      interpolation=cv2.INTER_AREA) / 255.0
    assert np.abs(s.face_hq - s.face_lq).mean() < 1.3 * np.abs(trip - s.face_lq).mean() + 0.5 / 255
    noise = Fixed(photo_op(noise=NoiseParams(gaussian_sigma=20.0), noise_seed=1))
    s = _data(tmp_path, detector=NoFaces(), degradation=noise, cfg={"reffr_prob": 1.0}).batch(0).samples[0]
    gt = _data(tmp_path, detector=NoFaces(), degradation=noise).batch(0).samples[0].face_hq  # same draw, GT face
    err_lq, err_hq = np.abs(s.face_lq - gt).mean(), np.abs(s.face_hq - gt).mean()
    assert 0 < err_hq < 0.8 * err_lq  # denoised: the Ref-FR's guess, not the ground truth


def test_heldout_files_are_never_yielded(tmp_path):
    cfg = Stage2DataConfig(
        scenes=[str(DATA / "scenes_clean/ffdnet/testsets/Kodak24/*.png"), str(CBSD68 / "10*.png")],
        face_pool=[str(FFHQ / "*.png")], split_file=str(SPLIT), exclude=["*/CBSD68/101085.png"],
        crop_sizes=[64], scale_range=(0.3, 0.4), pool_face_sizes=(32, 40),
    )
    data = Stage2Data(cfg, batch_size=4, seed=0, cache_dir=tmp_path, detector=NoFaces())
    heldout = set(json.loads(SPLIT.read_text())["heldout"])
    assert all("Kodak24" not in str(p) and not p.name == "101085.png" for p in data.scene_paths)
    assert data.scene_paths and all(int(p.stem) < 80 for p in data.pool_paths)
    n = len(data.scene_paths)
    seen = {data.scene_for(k) for k in range(3 * n)}
    assert seen == set(data.scene_paths)  # every training image is used, nothing else
    for batch in (data.batch(i) for i in range(3)):
        for s in batch.samples:
            for p in (s.scene_path, s.face_path):
                assert not any(p.endswith("/" + h) for h in heldout) and not p.endswith("101085.png")


def test_data_is_deterministic_and_resumable(tmp_path):
    data = _data(tmp_path, detector=NoFaces())
    first = [next(data) for _ in range(3)]
    state = data.state_dict()
    fourth = next(data)
    resumed = _data(tmp_path, detector=NoFaces())
    resumed.load_state_dict(state)
    again = next(resumed)
    assert torch.equal(again.lq, fourth.lq) and torch.equal(again.face_lq[1], fourth.face_lq[1])
    assert not torch.equal(first[0].lq, first[1].lq)
    with pytest.raises(ConfigError, match="seed"):
        Stage2Data(data.cfg, batch_size=2, seed=4, detector=NoFaces()).load_state_dict(state)


def test_bad_config_values_are_rejected():
    with pytest.raises(ConfigError, match="crop_sizes"):
        Stage2DataConfig(crop_sizes=[50])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(Stage2Config, TINY, ["data.crop_size=64"])
    with pytest.raises(ConfigError, match="neg_prompt_prob"):
        load_config(Stage2Config, TINY, ["neg_prompt_prob=1.5"])
    assert load_config(Stage2Config, TINY, ["mixed_precision=no"]).mixed_precision == "no"  # YAML: no -> False
    with pytest.raises(ConfigError, match="mixed_precision"):
        load_config(Stage2Config, TINY, ["mixed_precision=fp16"])


def test_embedded_config_loads_and_finds_its_images():
    cfg = load_config(Stage2Config, REPO / "configs" / "restorer_embedded.yaml")
    assert cfg.model == "small" and cfg.lr > 2e-5 and cfg.data.split_file
    from face2scene_core.training.data import expand_images, is_excluded, load_heldout

    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        scenes = expand_images(cfg.data.scenes)
        held = load_heldout(cfg.data.split_file)
    finally:
        os.chdir(cwd)
    kept = [p for p in scenes if not is_excluded(p, held)]
    assert len(kept) > 50 and len(kept) < len(scenes)


# ---------------------------------------------------------------------------------------------- trainer
def test_fixed_batch_loss_goes_down_and_final_adapter_reloads(tmp_path, fadex_dir):
    from face2scene_core.restorer.loading import restorer_from_adapter

    out = tmp_path / "run"
    cfg = tiny_cfg(out, fadex_dir, "overfit_batches=1", "neg_prompt_prob=0", "steps=20", "checkpoint_every=100")
    final = train_restorer(cfg, detector=NoFaces())
    hist = _history(out)
    l2 = [h["l2"] for h in hist["history"]]
    assert len(l2) == 20 and hist["losses_on"] == ["l2"]
    assert np.mean(l2[-3:]) < 0.7 * l2[0], l2
    # the final adapter rebuilds the trained model
    restorer = restorer_from_adapter(final)
    ckpt = load_file(str(out / "checkpoints" / "step_0000020" / "model.safetensors"))
    unet_w = ckpt["restorer.unet.conv_out.weight"]
    assert torch.equal(restorer.unet.conv_out.weight, unet_w) and unet_w.abs().sum() > 0


def test_resume_continues_exactly(tmp_path, fadex_dir):
    opts = ("neg_prompt_prob=0.5", "token_dropout=0.3", "checkpoint_every=2", "batch_size=2")
    straight = tmp_path / "straight"
    train_restorer(tiny_cfg(straight, fadex_dir, "steps=4", *opts), detector=NoFaces())
    split = tmp_path / "split"
    train_restorer(tiny_cfg(split, fadex_dir, "steps=2", *opts), detector=NoFaces())  # "interrupted" at step 2
    with pytest.raises(ConfigError, match="--resume"):
        train_restorer(tiny_cfg(split, fadex_dir, "steps=4", *opts), detector=NoFaces())
    train_restorer(tiny_cfg(split, fadex_dir, "steps=4", *opts), resume=True, detector=NoFaces())
    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(str(straight / "checkpoints" / "step_0000004" / name))
        b = load_file(str(split / "checkpoints" / "step_0000004" / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert [h["step"] for h in _history(split)["history"]] == [1, 2, 3, 4]
    assert _history(split)["history"][-1]["total"] == _history(straight)["history"][-1]["total"]


def test_missing_lpips_backbone_is_an_error_only_when_required(tmp_path, fadex_dir):
    with pytest.raises(MissingBackboneError, match="lpips_backbone"):
        train_restorer(tiny_cfg(tmp_path / "a", fadex_dir, "require_all_losses=true", "steps=1"), detector=NoFaces())
    out = tmp_path / "b"
    train_restorer(tiny_cfg(out, fadex_dir, "steps=1"), detector=NoFaces())
    hist = _history(out)
    assert hist["losses_on"] == ["l2"] and set(hist["losses_off"]) == {"lpips", "gan"}
    assert "lpips_backbone" in hist["losses_off"]["lpips"] and "dino_backbone" in hist["losses_off"]["gan"]
    assert (out / "final.safetensors").is_file()


def test_lpips_term_trains_when_backbone_is_given(tmp_path, fadex_dir, vgg_file):
    out = tmp_path / "lp"
    train_restorer(tiny_cfg(out, fadex_dir, f"lpips_backbone={vgg_file}", "steps=1", "lambda_gan=0"),
                   detector=NoFaces())
    entry = _history(out)["history"][0]
    assert entry["lpips"] > 0 and entry["total"] == pytest.approx(2.0 * entry["l2"] + 5.0 * entry["lpips"], rel=1e-5)


def test_gan_step_updates_heads_not_the_frozen_backbone(tmp_path, fadex_dir):
    from transformers import Dinov2Config, Dinov2Model

    dino = tmp_path / "dino"
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=56, patch_size=14)).save_pretrained(str(dino), safe_serialization=True)
    out = tmp_path / "gan"
    out.mkdir()
    cfg = tiny_cfg(out, fadex_dir, f"dino_backbone={dino}", "neg_prompt_prob=0", "require_all_losses=false")
    trainer = Stage2Trainer(cfg, detector=NoFaces())
    disc = trainer.acc.unwrap_model(trainer.disc)
    heads = {k: v.clone() for k, v in disc.heads.state_dict().items()}
    backbone = {k: v.clone() for k, v in disc.backbone.state_dict().items()}
    unet = trainer.restorer.unet.conv_out.weight.clone()
    logs = trainer.train_step()
    assert {"gan", "d_loss", "l2"} <= set(logs)
    assert any(not torch.equal(heads[k], v) for k, v in disc.heads.state_dict().items())
    assert all(torch.equal(backbone[k], v) for k, v in disc.backbone.state_dict().items())
    assert not torch.equal(unet, trainer.restorer.unet.conv_out.weight)
    assert not any(p.requires_grad for p in disc.backbone.parameters())
    # heads and their optimiser are checkpointed: a resumed trainer takes the same next step
    folder = trainer.save_checkpoint()
    resumed = Stage2Trainer(cfg, detector=NoFaces())
    resumed.load_checkpoint(folder)
    a, b = trainer.train_step(), resumed.train_step()
    assert a["d_loss"] == b["d_loss"] and a["gan"] == b["gan"]
    for (k, v), w in zip(trainer.disc.heads.state_dict().items(), resumed.disc.heads.state_dict().values()):
        assert torch.equal(v, w), k


def test_sd_turbo_mode_trains_lora_conv_in_and_mapnet_only(tmp_path, fadex_dir):
    from face2scene_core.restorer.sd_turbo import build_tiny_sd_like

    build_tiny_sd_like(tmp_path / "cfg", cross_attention_dim=32).save_pretrained(tmp_path / "sd")  # SD-2.1-shaped
    out = tmp_path / "out"
    out.mkdir()
    cfg = tiny_cfg(out, fadex_dir, "model=sd_turbo", f"sd_turbo={tmp_path / 'sd'}",
                   f'sd_turbo_options={{config_dir: "{tmp_path / "cfg"}", unet_lora_rank: 4, vae_lora_rank: 4}}',
                   "mapnet={num_heads: 2, mlp_hidden: 32}")
    trainer = Stage2Trainer(cfg, detector=NoFaces())
    r = trainer.restorer
    before = {n: p.detach().clone() for n, p in r.named_parameters()}
    trainer.train_step()
    changed = {n for n, p in r.named_parameters() if not torch.equal(before[n], p)}
    assert {"unet.conv_in.weight", "mapnet.embed.weight"} <= changed
    assert any("lora_B" in n and n.startswith("unet.") for n in changed)
    assert any("lora_B" in n and n.startswith("codec.") for n in changed)
    frozen = {n for n, p in r.named_parameters() if not p.requires_grad}
    assert frozen and not (frozen & changed)  # the SD base weights never move
    assert all("lora_" in n or n.startswith(("unet.conv_in.", "mapnet.")) for n in changed)
