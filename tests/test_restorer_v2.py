"""The v2 embedded restorer network (FiLMUNet): contract, cost model, training on photo operators, and training
under ``accelerate launch`` with two CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from face2scene_core.config import load_config
from face2scene_core.restorer.film_net import FiLMUNet, flops_per_pixel
from face2scene_core.restorer.loading import restorer_from_adapter
from face2scene_core.restorer.model import OneStepRestorer
from face2scene_core.training.stage2 import Stage2Config, train_restorer
from shared_data import datasets_dir
from test_training import NoFaces, fadex_dir  # noqa: F401  (the tiny FaDeX fixture and the faceless detector)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "restorer_tiny.yaml"
FILM = ["small.net=film", "small.factor=2", "small.block_out_channels=[8, 16, 32]", "small.layers_per_block=[1, 1, 1]",
        "small.cond_dim=16", "small.self_attention=[false, false, false]", "data.operators=photo",
        "lambda_l1=1.0", "lambda_l2=0.0", "lr_schedule=cosine", "data.crop_sizes=[64]"]


def _cfg(out: Path, fadex: Path, *extra: str) -> Stage2Config:
    data = datasets_dir()
    scenes = [str(data / "scenes_clean/ffdnet/testsets/CBSD68/1*.png")]
    pool = [str(data / "faces_ffhq/daps_test/dataset/demo-ffhq/0000?.png")]
    return load_config(Stage2Config, TINY, [f"output_dir={out}", f"fadex={fadex}", *FILM,
                                            f"data.scenes={json.dumps(scenes)}", f"data.face_pool={json.dumps(pool)}",
                                            *extra])


def test_untrained_film_restorer_returns_its_input_and_tokens_steer_a_trained_one():
    r = OneStepRestorer.small(net="film", factor=2, feature_channels=16, token_dim=32, block_out_channels=(8, 16),
                              layers_per_block=(1, 1), cond_dim=16, mapnet_kwargs={"num_heads": 2, "mlp_hidden": 32})
    assert r.multiple == 4 and r.codec.latent_channels == 12
    x = torch.rand(1, 3, 30, 42)
    feats = torch.randn(1, 16, 8, 8)
    tokens = r.tokens_from_features(feats)
    y = r.restore(x, tokens)
    assert torch.allclose(y, x, atol=1e-6)  # zero output conv: the identity, any size
    with torch.no_grad():  # perturb the net: now different codes must give different photos
        for p in r.unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    other = r.tokens_from_features(torch.randn(1, 16, 8, 8))
    assert (r.restore(x, tokens) - r.restore(x, other)).abs().max() > 1e-3


def test_flops_per_pixel_matches_torch_flop_counter():
    net = FiLMUNet(block_out_channels=(16, 32, 64), layers_per_block=(1, 2, 2), cross_attention_dim=32, cond_dim=32)
    z = torch.randn(1, 12, 64, 96)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(z, None, torch.randn(1, 5, 32))
    convs = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(k))
    predicted = flops_per_pixel(net, downscale=2) * (64 * 2) * (96 * 2)
    assert abs(predicted - convs) / convs < 1e-6, (predicted, convs)


def test_film_restorer_trains_on_photo_operators_and_its_adapter_reloads(tmp_path, fadex_dir):
    out = tmp_path / "run"
    final = train_restorer(_cfg(out, fadex_dir, "overfit_batches=1", "neg_prompt_prob=0", "steps=60", "lr=3e-3",
                                "checkpoint_every=100", 'data.degradation={"family_weights": {"noise": 1.0}}'),
                           detector=NoFaces())
    hist = json.loads((out / "loss_history.json").read_text())
    l1 = [h["l1"] for h in hist["history"]]
    assert len(l1) == 60 and np.mean(l1[-3:]) < 0.95 * l1[0], l1  # the residual grows from a zero output conv
    lrs = [h["lr"] for h in hist["history"]]
    assert lrs[-1] < 0.2 * max(lrs)  # cosine: decays towards lr_min_ratio
    restored = restorer_from_adapter(final)
    assert type(restored.unet).__name__ == "FiLMUNet" and restored.spec()["net"] == "FiLMUNet"


def test_psnr_loss_is_the_db_lost_against_the_input_and_weighs_a_mild_sample_like_a_heavy_one():
    from face2scene_core.training.losses import psnr_gain_loss

    gt = torch.rand(2, 3, 16, 16)
    lq = gt + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)  # heavy and mild: 20 dB and 40 dB inputs
    half = gt + (lq - gt) / 2  # each output halves its error: +6.02 dB for both
    assert psnr_gain_loss(half, gt, lq, eps=1e-12).item() == pytest.approx(-6.0206, abs=1e-3)
    assert psnr_gain_loss(lq, gt, lq).item() == pytest.approx(0.0, abs=1e-6)
    clean = gt.clone()  # a clean input: any change is a loss, capped by eps
    assert psnr_gain_loss(clean + 0.003, gt, clean, eps=1e-5).item() > 0
    pred = half.clone().requires_grad_(True)
    psnr_gain_loss(pred, gt, lq, eps=1e-12).backward()
    g = pred.grad.abs().flatten(1).sum(1)  # per-sample pull: the mild sample's pixels are pulled as hard per dB
    assert g[1] > 5 * g[0]  # a pixel mean (L2) would pull the heavy one 10x harder instead


def test_harm_loss_counts_only_the_samples_an_output_makes_worse_than_their_input():
    from face2scene_core.training.losses import psnr_gain_loss, psnr_harm_loss

    gt = torch.rand(2, 3, 16, 16)
    lq = gt + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)
    out = torch.stack([gt[0] + 0.05, gt[1] + 0.02])  # sample 0 improved (+6.02 dB), sample 1 harmed (-6.02 dB)
    per = psnr_gain_loss(out, gt, lq, eps=1e-12, reduction="none")
    assert per.tolist() == pytest.approx([-6.0206, 6.0206], abs=1e-3)
    assert psnr_harm_loss(out, gt, lq, eps=1e-12).item() == pytest.approx(6.0206 / 2, abs=1e-3)
    pred = out.clone().requires_grad_(True)
    psnr_harm_loss(pred, gt, lq, eps=1e-12).backward()
    assert pred.grad[0].abs().sum() == 0 and pred.grad[1].abs().sum() > 0  # only the harmed sample is pulled
    with pytest.raises(ValueError, match="reduction"):
        psnr_gain_loss(out, gt, lq, reduction="sum")


def test_a_blind_model_started_from_a_token_model_drops_its_mapnet_and_learns_once_its_gate_is_reset(tmp_path, fadex_dir):
    tok = restorer_from_adapter(train_restorer(_cfg(tmp_path / "tok", fadex_dir, "steps=2", "checkpoint_every=100"),
                                               detector=NoFaces()))
    assert tok.mapnet is not None
    with torch.no_grad():  # close its gate, as the shipped model's prompts alone do
        tok.unet.gate.bias.fill_(-12.0)
    tok = tok.save_adapter(tmp_path / "closed.safetensors")
    out = tmp_path / "blind"
    final = train_restorer(_cfg(out, fadex_dir, f"init_adapter={tok}", "use_tokens=false", "token_dropout=0.0",
                                "reset_gate=true", "lambda_l1=0.0", "lambda_psnr=1.0", "overfit_batches=1",
                                "neg_prompt_prob=0", "steps=40", "lr=3e-3", "checkpoint_every=100",
                                'data.degradation={"family_weights": {"noise": 1.0}}'), detector=NoFaces())
    hist = json.loads((out / "loss_history.json").read_text())
    assert hist["losses_on"] == ["psnr"]
    db = [h["psnr"] for h in hist["history"]]
    assert np.mean(db[-3:]) < -0.5, db  # on one noisy batch it ends more than 0.5 dB better than its input
    assert restorer_from_adapter(final).mapnet is None


def test_v1_adapter_is_refused_by_a_film_restorer_with_a_clear_message(tmp_path):
    from face2scene_core.errors import ArchitectureMismatchError

    v1 = OneStepRestorer.small(feature_channels=16, token_dim=32, block_out_channels=(32, 64), attention_heads=2,
                               self_attention=(False, False), mapnet_kwargs={"num_heads": 2, "mlp_hidden": 32})
    path = v1.save_adapter(tmp_path / "v1.safetensors")
    film = OneStepRestorer.small(net="film", feature_channels=16, token_dim=32, block_out_channels=(32, 64),
                                 layers_per_block=(1, 1), mapnet_kwargs={"num_heads": 2, "mlp_hidden": 32})
    with pytest.raises(ArchitectureMismatchError, match="net is 'UNet2DConditionModel' in the file but 'FiLMUNet'"):
        film.load_adapter(path)
    assert type(restorer_from_adapter(path).unet).__name__ == "UNet2DConditionModel"


def test_training_runs_under_accelerate_launch_with_two_cpu_processes(tmp_path, fadex_dir):
    out = tmp_path / "ddp"
    data = datasets_dir()
    overrides = [f"output_dir={out}", f"fadex={fadex_dir}", *FILM, "steps=2", "checkpoint_every=2", "cpu=true",
                 "data.scene_face_prob=0", "batch_size=2", "num_threads=1",
                 f"data.scenes={json.dumps([str(data / 'scenes_clean/ffdnet/testsets/CBSD68/1*.png')])}",
                 f"data.face_pool={json.dumps([str(data / 'faces_ffhq/daps_test/dataset/demo-ffhq/0000?.png')])}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # --multi_gpu is accelerate's multi-process launcher (torch.distributed, gloo on a machine without GPUs);
    # --cpu alone would start a single process
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "face2scene_core.cli", "train-restorer",
           "--config", str(TINY), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hist = json.loads((out / "loss_history.json").read_text())
    assert [h["step"] for h in hist["history"]] == [1, 2]
    assert (out / "final.safetensors").is_file() and hist["num_processes"] == 2


def test_the_sd_turbo_recipe_config_holds_the_paper_values_and_asks_for_the_checkpoint():
    """configs/restorer_sd_turbo.yaml (README's multi-GPU command) is the paper's recipe and says what is missing."""
    from face2scene_core.config import load_config
    from face2scene_core.errors import ConfigError
    from face2scene_core.training.stage2 import Stage2Config

    path = Path(__file__).resolve().parents[1] / "configs" / "restorer_sd_turbo.yaml"
    with pytest.raises(ConfigError, match="sd_turbo needs `sd_turbo: PATH`"):
        load_config(Stage2Config, path, [])
    cfg = load_config(Stage2Config, path, ["sd_turbo=/models/sd-turbo"])
    assert cfg.sd_turbo_options == {"unet_lora_rank": 32, "vae_lora_rank": 16}
    assert (cfg.lambda_l2, cfg.lambda_lpips, cfg.lambda_gan, cfg.lr, cfg.neg_prompt_prob) == (2.0, 5.0, 0.5, 2e-5, 0.05)
    assert cfg.data.crop_sizes == [512] and cfg.require_all_losses
