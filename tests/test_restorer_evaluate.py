import json

import torch

from face2scene_core.imageio import load_image

from face2scene_core.fadex.model import FaDeX
from face2scene_core.restorer.model import OneStepRestorer
from face2scene_core.evaluation.crops import evaluate_restorer


def test_evaluation_reports_input_restored_and_token_effect(tmp_path):
    FaDeX(channels=(8, 16), blocks_per_stage=(1, 1), embed_dim=16, proj_hidden=16).save_pretrained(tmp_path / "fadex")
    model = OneStepRestorer.small(feature_channels=16, token_dim=32, block_out_channels=(32, 32, 32),
                                  attention_heads=2, identity_init=True)
    model.save_adapter(tmp_path / "a.safetensors")
    r = evaluate_restorer(str(tmp_path / "a.safetensors"), fadex=str(tmp_path / "fadex"), n_samples=3, crop=64,
                          out=tmp_path, figure_rows=2)
    m = r["metrics"]
    assert set(m) == {"input", "restored", "restored_no_tokens"} and m["input"]["psnr"]["n"] == 3
    # an identity-initialised (untrained) model returns its input: no gain, and tokens change nothing
    assert abs(r["gain_over_input_psnr"]["mean"]) < 0.5
    assert abs(r["token_gain_psnr"]["mean"]) < 1e-6
    assert json.loads((tmp_path / "restorer_eval.json").read_text())["n"] == 3
    # figures: 2 rows of input | no tokens | restored | ground truth, and the per-sample gain plot
    crops = load_image(tmp_path / "crops.png")
    assert crops.shape == (2 * 64, 4 * 64, 3)
    assert load_image(tmp_path / "restorer_eval.png").shape[1] > 500


def test_evaluation_with_a_separately_trained_ablation_model(tmp_path):
    FaDeX(channels=(8, 16), blocks_per_stage=(1, 1), embed_dim=16, proj_hidden=16).save_pretrained(tmp_path / "fadex")
    torch.manual_seed(0)
    full = OneStepRestorer.small(feature_channels=16, token_dim=32, block_out_channels=(32, 32, 32), attention_heads=2)
    full.save_adapter(tmp_path / "full.safetensors")
    OneStepRestorer.small(feature_channels=16, token_dim=32, block_out_channels=(32, 32, 32), attention_heads=2,
                          identity_init=True).save_adapter(tmp_path / "abl.safetensors")
    r = evaluate_restorer(str(tmp_path / "full.safetensors"), fadex=str(tmp_path / "fadex"),
                          ablation=str(tmp_path / "abl.safetensors"), n_samples=3, crop=64)
    assert r["token_gain_vs"] == "ablation model" and r["metrics"]["ablation"]["psnr"]["n"] == 3
    # the identity-initialised ablation returns the input, so the gain is measured against the input's PSNR
    diff = r["metrics"]["restored"]["psnr"]["mean"] - r["metrics"]["input"]["psnr"]["mean"]
    assert abs(r["token_gain_psnr"]["mean"] - diff) < 0.05
