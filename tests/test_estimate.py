"""The degradation estimate head: labels from the operators' own parameters, a head that learns them, readable and
honest output (no numbers for a face too small to trust), and the gallery plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from face2scene_core.degradation.families import PhotoDegradation, gaussian_blur, motion_blur, photo_op
from face2scene_core.degradation.params import NoiseParams
from face2scene_core.degradation.presets import PRESETS
from face2scene_core.fadex.estimate import (MIN_TRUST_SIDE, EstimateHead, Estimator, _targets, accuracy, describe,
                                            labels_of, load_head, save_head)


def test_labels_are_the_operators_own_numbers():
    op = photo_op(blur=gaussian_blur(2.0), noise=NoiseParams(gaussian_sigma=10.0), jpeg=45, scale=2)
    assert labels_of(op) == {"blur_sigma": pytest.approx(2.0), "motion_length": 0.0, "noise_sigma": pytest.approx(10.0),
                             "jpeg_quality": 45, "scale": 2}
    assert labels_of(photo_op(blur=motion_blur(9.0, 0.3)))["motion_length"] == pytest.approx(9.0)
    assert labels_of(photo_op()) == {"blur_sigma": 0.0, "motion_length": 0.0, "noise_sigma": 0.0,
                                     "jpeg_quality": None, "scale": 1}
    shot = labels_of(photo_op(noise=NoiseParams(poisson_scale=1.0)))["noise_sigma"]
    assert 5 < shot < 12  # shot noise at mid-grey, in 8-bit levels
    with pytest.raises(ValueError, match="second-order"):
        labels_of(PRESETS["D1"])
    rng = np.random.default_rng(0)
    sampler = PhotoDegradation()
    assert labels_of(sampler.sample_from("downup", rng))["scale"] in (2, 4)


def _fake_pairs(n: int, rng: np.random.Generator):
    """Features that carry the labels linearly, plus nuisance dimensions."""
    sampler = PhotoDegradation()
    fams = ["clean", "jpeg", "noise", "blur", "motion", "downup"]
    labels = [labels_of(sampler.sample_from(fams[i % 6], rng)) for i in range(n)]
    t = _targets(labels)
    signal = np.stack([t["blur_sigma"], t["motion_length"], t["noise_sigma"], t["jpeg_present"], t["jpeg_quality"],
                       t["scale"].astype(np.float32)], 1)
    x = np.concatenate([signal @ rng.normal(size=(6, 24)), rng.normal(size=(n, 8))], 1).astype(np.float32)
    return x + 0.02 * rng.normal(size=x.shape).astype(np.float32), labels


def test_the_head_learns_the_numbers_and_reports_uncertainty(tmp_path):
    rng = np.random.default_rng(1)
    x, labels = _fake_pairs(1200, rng)
    t = _targets(labels)
    tt = {"cont": torch.from_numpy(np.stack([t[k] for k in ("blur_sigma", "motion_length", "noise_sigma")], 1)),
          "jpeg_present": torch.from_numpy(t["jpeg_present"]), "jpeg_quality": torch.from_numpy(t["jpeg_quality"]),
          "scale": torch.from_numpy(t["scale"])}
    torch.manual_seed(0)
    head = EstimateHead(x.shape[1], 64)
    xt = torch.from_numpy(x)
    head.mu.copy_(xt.mean(0))
    head.sd.copy_(xt.std(0))
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(1500):
        idx = torch.randint(0, 1000, (128,))
        loss = head.loss(xt[idx], {k: v[idx] for k, v in tt.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    est = head.estimate(x[1000:])
    acc = accuracy(est, labels[1000:])
    assert acc["noise_sigma"]["spearman"] > 0.75 and acc["blur_sigma"]["spearman"] > 0.75  # chance: 0
    assert acc["jpeg_quality"]["presence_accuracy"] > 0.9 and acc["scale"]["accuracy"] > 0.9
    assert all(e["noise_sigma"]["sd"] > 0 for e in est)
    line = describe(est[0])
    assert "blur" in line and "noise" in line and "scale x" in line
    path = save_head(head, tmp_path / "h", {"fadex_id": "abc"})
    back, spec = load_head(path.parent)
    assert spec["fadex_id"] == "abc" and back.estimate(x[1000:1001]) == est[:1]


def test_a_face_too_small_gets_a_note_not_numbers_and_a_head_for_another_fadex_is_not_used(tmp_path):
    from face2scene_core.fadex.model import FaDeX

    fadex = FaDeX(channels=(8, 16), blocks_per_stage=(1, 1), embed_dim=16)
    head = EstimateHead(16 + 2 * fadex.feature_channels, 16)
    save_head(head, tmp_path, {"fadex_id": "not-this-one"})
    assert Estimator.for_fadex(tmp_path, fadex) is None
    from face2scene_core.codes import module_id

    save_head(head, tmp_path, {"fadex_id": module_id(fadex)})
    est = Estimator.for_fadex(tmp_path, fadex)
    out = fadex.encode_pair(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8))
    small = est(out, MIN_TRUST_SIDE - 8)
    assert set(small) == {"untrusted"} and f"{MIN_TRUST_SIDE} px" in small["untrusted"]
    assert describe(small).startswith("no estimate:")
    assert "noise_sigma" in est(out, 64)


def test_a_gallery_run_plots_the_estimates(tmp_path):
    from face2scene_core.gallery import plot_estimates

    def rec(name, noise, blur, q):
        e = {"blur_sigma": {"value": blur, "sd": 0.3}, "motion_length": {"value": 0.0, "sd": 0.5},
             "noise_sigma": {"value": noise, "sd": 1.0}, "jpeg_quality": {"value": q, "p_jpeg": 0.9, "sd": 5},
             "scale": {"value": 1, "p": 0.9}}
        return {"ok": True, "input": name, "report": {"estimate": e}}

    records = [rec("a.jpg", 3.0, 0.5, 80), rec("b.jpg", 12.0, 1.5, None),
               {"ok": True, "input": "c.jpg", "report": {"estimate": {"untrusted": "small"}}},
               {"ok": False, "input": "d.jpg"}, rec("clean.jpg", 0.6, 0.1, None)]
    path = plot_estimates(records, tmp_path / "est.png")
    from PIL import Image

    from face2scene_core.gallery import photos_to_name

    rows = [(r["input"], r["report"]["estimate"]) for r in records if r.get("ok") and "noise_sigma" in
            r["report"]["estimate"]]
    assert photos_to_name(rows) == {"a.jpg", "b.jpg"}  # the clean photo stays unnamed
    assert photos_to_name(rows, most=1) == {"b.jpg"}

    assert Image.open(path).size[0] > 600
    assert plot_estimates(records[2:4], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    json.dumps(records)


def test_the_shipped_head_reads_more_noise_from_a_noisy_photo_than_from_its_clean_original(capsys):
    """`face2scene estimate` on a real portrait, clean and with sensor noise sigma 12 (8-bit levels)."""
    from PIL import Image

    from face2scene_core.cli import main
    from shared_data import datasets_dir

    src = datasets_dir() / "faces_identity/deepface/tests/unit/dataset/img25.jpg"
    clean = np.asarray(Image.open(src).convert("RGB"))
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 12, clean.shape), 0, 255).round().astype(np.uint8)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        Image.fromarray(noisy).save(Path(d) / "noisy.png")
        Image.fromarray(clean).save(Path(d) / "clean.png")
        got = {}
        for name in ("clean", "noisy"):
            assert main(["estimate", str(Path(d) / f"{name}.png"), "--json"]) == 0
            (face,) = json.loads(capsys.readouterr().out)["faces"]
            got[name] = face["estimate"]
    assert got["noisy"]["noise_sigma"]["value"] > got["clean"]["noise_sigma"]["value"] + 4
    assert 6 < got["noisy"]["noise_sigma"]["value"] < 24
    assert main(["estimate", str(src)]) == 0
    line = capsys.readouterr().out
    assert "img25.jpg face at" in line and "noise" in line and "JPEG" in line
