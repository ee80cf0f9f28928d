"""The learned stage of the offline Ref-FR: RefineNet, RefinedRefFR, the shipped weights and the trainer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from face2scene_core.errors import ConfigError
from face2scene_core.reffr import EMBEDDED_REFINER_DIR, RefinedRefFR, RefineNet, default_reffr
from face2scene_core.reffr.refine import refine_face
from face2scene_core.reffr.train_refine import RefineTrainConfig, train_refine
from face2scene_core.reffr.transfer import ReferenceTransferRefFR

from shared_data import datasets_dir

FFHQ_HELDOUT = "faces_ffhq/daps_test/dataset/demo-ffhq/000{}.png"


def _ffhq(n: int) -> np.ndarray:
    import cv2

    path = datasets_dir() / FFHQ_HELDOUT.format(n)
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_untrained_refiner_returns_the_transfer_output_unchanged():
    torch.manual_seed(0)
    net = RefineNet(channels=(8, 16), blocks=(1, 1)).eval()
    rng = np.random.default_rng(0)
    lq = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    hq = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(refine_face(net, lq, hq), hq)


def test_refine_face_keeps_sizes_that_are_not_multiples_of_4():
    net = RefineNet(channels=(8, 16), blocks=(1, 1)).eval()
    with torch.no_grad():
        net.out.bias.fill_(0.1)  # a net that changes its input
    face = np.full((66, 66, 3), 100, np.uint8)
    out = refine_face(net, face, face)
    assert out.shape == (66, 66, 3) and out.dtype == np.uint8
    assert int(out[0, 0, 0]) != 100


def test_refinenet_rejects_mismatched_or_odd_inputs():
    net = RefineNet(channels=(8, 16), blocks=(1, 1))
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.zeros(1, 3, 30, 32), torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match="both be"):
        net(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 64, 64))


def test_missing_refiner_weights_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="train_refine") as err:
        RefinedRefFR.from_pretrained(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


def test_embedded_refiner_is_shipped_as_safetensors_and_is_the_default():
    files = sorted(p.name for p in EMBEDDED_REFINER_DIR.iterdir())
    assert "config.json" in files and any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in files)
    reffr = default_reffr(256)
    assert isinstance(reffr, RefinedRefFR) and reffr.size == 256
    assert default_reffr(256) is reffr  # one instance per size, not reloaded per face


def test_shipped_refiner_brings_heldout_faces_closer_to_the_ground_truth():
    """Held-out FFHQ faces (never trained on), blurred + downscaled + noisy: the refined face has a
    higher PSNR against the clean face than the reference transfer's output it starts from."""
    from face2scene_core.degradation import PRESETS, degrade_image
    from face2scene_core.evaluation.metrics import psnr

    refined = default_reffr(256)
    transfer = ReferenceTransferRefFR.for_size(256)
    gains = []
    for n in (80, 85, 90, 95):
        gt = _ffhq(n)
        for op in ("D1", "D2", "D4"):
            lq = degrade_image(gt, PRESETS[op])
            ref = gt[:, ::-1].copy()  # the mirrored face as its reference (no other photo of the person)
            gains.append(psnr(refined.restore(lq, [ref]), gt) - psnr(transfer.restore(lq, [ref]), gt))
    assert np.mean(gains) > 0.5, gains  # measured: +1.32 dB, every one of the 12 cases better
    assert min(gains) > 0, gains


def _tiny_config(tmp_path: Path, steps: int) -> RefineTrainConfig:
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train_identities": ["faceapi:raj"]}))
    ffhq = str(datasets_dir() / "faces_ffhq/daps_test/dataset/demo-ffhq/0000[0-3].png")
    return RefineTrainConfig(output_dir=str(tmp_path / "run"), sizes=[64], ffhq=[ffhq], split=str(split),
                             ops_per_face=1, ops_per_ffhq=1, channels=[8, 16], blocks=[1, 1], crop_size=32,
                             batch_size=2, steps=steps, checkpoint_every=2, log_every=1)


def test_trainer_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    """A run stopped after its step-2 checkpoint and resumed ends with the weights of the run that never
    stopped (pool reused, same crops, same optimiser state), and its metrics have each step once."""
    import shutil

    from safetensors.torch import load_file

    cfg = _tiny_config(tmp_path, 4)
    final_a = train_refine(cfg)
    with pytest.raises(ConfigError, match="--resume"):
        train_refine(cfg)  # an existing run is never overwritten silently
    run_a = Path(cfg.output_dir)
    run_b = tmp_path / "interrupted"
    shutil.copytree(run_a, run_b)
    shutil.rmtree(run_b / "final")
    shutil.rmtree(run_b / "checkpoints" / "step_000004")  # as if killed before the step-4 checkpoint
    cfg.output_dir = str(run_b)
    final_b = train_refine(cfg, resume=True)
    wa = load_file(str(next(final_a.glob("*.safetensors"))))
    wb = load_file(str(next(final_b.glob("*.safetensors"))))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    rows = [json.loads(line) for line in (run_b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert any(np.any(v.numpy() != 0) for k, v in wa.items() if k.startswith("out."))  # it learned something
    net = RefineNet.from_pretrained(str(final_a), use_safetensors=True)
    assert tuple(net.config.channels) == (8, 16)


def test_light_operators_degrade_less_than_the_default_ones():
    """light_prob's operators (x2, mild) leave faces much closer to the clean face than Real-ESRGAN x4's."""
    from face2scene_core.degradation import RealESRGANDegradation, degrade_image
    from face2scene_core.evaluation.metrics import psnr
    from face2scene_core.reffr.train_refine import LIGHT_DEGRADATION

    gt = _ffhq(81)
    rng = np.random.default_rng(0)
    light = [psnr(degrade_image(gt, RealESRGANDegradation(LIGHT_DEGRADATION).sample(rng)), gt) for _ in range(8)]
    heavy = [psnr(degrade_image(gt, RealESRGANDegradation().sample(rng)), gt) for _ in range(8)]
    assert np.median(light) > np.median(heavy) + 2.0, (light, heavy)


def test_resume_with_another_network_or_pool_is_refused(tmp_path):
    cfg = _tiny_config(tmp_path, 2)
    train_refine(cfg)
    cfg.channels = [16, 32]
    with pytest.raises(ConfigError, match="config changed in channels"):
        train_refine(cfg, resume=True)
