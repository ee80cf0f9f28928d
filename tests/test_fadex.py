"""FaDeX: encoder shapes and I/O, the MoCo queue and EMA, the multi-positive loss, the pair sampler,
resumable training and the degradation-vs-content evaluation (tiny configs, real faces)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from face2scene_core.config import load_config
from face2scene_core.degradation import PRESETS
from face2scene_core.errors import ConfigError, FaceTooSmallError
from face2scene_core.fadex import (
    FaDeX,
    FaDeXTrainConfig,
    FacePairSampler,
    MoCoFaDeX,
    multi_positive_info_nce,
    train_fadex,
)
from face2scene_core.evaluation.fadex import evaluate_fadex, similarity_stats
from face2scene_core.fadex.moco import EMPTY_LABEL
from shared_data import datasets_dir

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "fadex_tiny.yaml"
TINY_MODEL = dict(channels=(8, 16, 16), blocks_per_stage=(1, 1, 1), embed_dim=16, proj_hidden=32)


_datasets = datasets_dir


@pytest.fixture(scope="module")
def ffhq() -> list[Path]:
    paths = sorted((_datasets() / "faces_ffhq" / "daps_test" / "dataset" / "demo-ffhq").glob("0000?.png"))
    assert len(paths) == 10
    return paths


def _tiny(**kw) -> FaDeX:
    torch.manual_seed(0)
    return FaDeX(**{**TINY_MODEL, **kw})


def _rand_pair(b: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g)


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("hw", [(32, 32), (48, 80), (33, 47), (96, 64)])
def test_shapes_any_size_and_unit_embedding(hw):
    model = _tiny().eval()
    lq, hq = _rand_pair(2, *hw)
    out = model(lq, hq)
    h, w = hw
    assert out.features.shape == (2, model.feature_channels, math.ceil(h / 4), math.ceil(w / 4))
    assert model.feature_channels == 16
    assert out.embedding.shape == (2, 16) and out.embedding.dtype == torch.float32
    torch.testing.assert_close(out.embedding.norm(dim=1), torch.ones(2))


def test_bad_inputs_and_arguments_raise():
    model = _tiny()
    with pytest.raises(ValueError, match="at least 32"):
        model(*_rand_pair(1, 31, 64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(torch.full((1, 3, 32, 32), 200.0), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="same shape"):
        model(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 40))
    with pytest.raises(ValueError, match="channels"):
        FaDeX(channels=(8,))
    with pytest.raises(ValueError, match="blocks_per_stage"):
        FaDeX(channels=(8, 16), blocks_per_stage=(1, 1, 1))
    with pytest.raises(ValueError, match="in_channels"):
        FaDeX(in_channels=5)


def test_encode_pair_centre_crops_never_resizes_and_rejects_small_faces():
    model = _tiny().train()
    rng = np.random.default_rng(0)
    lq = rng.integers(0, 256, (70, 600, 3), dtype=np.uint8)
    hq = rng.integers(0, 256, (70, 600, 3), dtype=np.uint8)
    out = model.encode_pair(lq, hq, max_side=512)
    assert model.training, "encode_pair must restore the module's mode"
    assert out.features.shape == (1, 16, math.ceil(70 / 4), 512 // 4)
    # same as the forward pass on the centre 70x512 window, in eval mode
    model.eval()
    crop = lambda a: torch.from_numpy(a[:, 44:556].copy()).permute(2, 0, 1)[None].float() / 255.0  # noqa: E731
    with torch.no_grad():
        ref = model(crop(lq), crop(hq))
    torch.testing.assert_close(out.embedding, ref.embedding)
    with pytest.raises(FaceTooSmallError, match="32 px"):
        model.encode_pair(lq[:31], hq[:31])
    with pytest.raises(ValueError, match="uint8"):
        model.encode_pair(lq.astype(np.float32), hq)


def test_save_pretrained_round_trip_is_safetensors_and_identical(tmp_path):
    model = _tiny()
    lq, hq = _rand_pair(3, 40, 56)
    model.train()
    model(lq, hq)  # move the BatchNorm running statistics away from their init
    model.eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "diffusion_pytorch_model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    loaded = FaDeX.from_pretrained(tmp_path).eval()
    assert tuple(loaded.config.channels) == TINY_MODEL["channels"]
    with torch.no_grad():
        a, b = model(lq, hq), loaded(lq, hq)
    assert torch.equal(a.features, b.features) and torch.equal(a.embedding, b.embedding)


# ----------------------------------------------------------------------------- MoCo + loss


def test_queue_is_fifo_with_labels():
    moco = MoCoFaDeX(_tiny(), queue_size=5)
    assert (moco.queue_labels == EMPTY_LABEL).all()
    keys = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    moco.enqueue(keys[:3], torch.tensor([10, 11, 12]))
    assert moco.queue_labels.tolist() == [10, 11, 12, -1, -1] and int(moco.queue_ptr) == 3
    moco.enqueue(keys[3:7], torch.tensor([13, 14, 15, 16]))
    # wrapped around: 15, 16 overwrote the two oldest entries
    assert moco.queue_labels.tolist() == [15, 16, 12, 13, 14] and int(moco.queue_ptr) == 2
    torch.testing.assert_close(moco.queue[0], keys[5])
    torch.testing.assert_close(moco.queue[4], keys[4])


def test_key_encoder_is_ema_and_forward_masks():
    moco = MoCoFaDeX(_tiny(), queue_size=6, momentum=0.9, temperature=0.5).train()
    assert not any(p.requires_grad for p in moco.encoder_k.parameters())
    with torch.no_grad():  # make query and key differ, as after some optimizer steps
        for p in moco.encoder_q.parameters():
            p.add_(0.05)
    q_params = [p.detach().clone() for p in moco.encoder_q.parameters()]
    k_params = [p.detach().clone() for p in moco.encoder_k.parameters()]
    moco.enqueue(torch.nn.functional.normalize(torch.randn(2, 16), dim=1), torch.tensor([7, 99]))
    lq, hq = _rand_pair(4, 32, 32)
    labels = torch.tensor([7, 7, 8, 8])
    out = moco(lq, hq, labels)
    for pq, pk0, pk in zip(q_params, k_params, moco.encoder_k.parameters()):
        torch.testing.assert_close(pk, 0.9 * pk0 + 0.1 * pq)
    assert out.logits.shape == (4, 4 + 6)
    # logits = cosine / temperature against [batch keys ; queue before this batch]
    torch.testing.assert_close(out.logits[:, :4], out.query @ out.keys.T / 0.5)
    expected_valid = torch.tensor([True] * 4 + [True, True, False, False, False, False])
    assert torch.equal(out.valid_mask[0], expected_valid)
    # queue entry labelled 7 is a positive of the label-7 queries, the empty slots never are
    assert out.positive_mask[:2, 4].all() and not out.positive_mask[2:, 4].any()
    assert torch.equal(out.positive_mask[:, :4], labels[:, None] == labels[None, :])
    assert moco.queue_labels.tolist()[2:6] == [7, 7, 8, 8] and int(moco.queue_ptr) == 0
    loss = multi_positive_info_nce(out.logits, out.positive_mask, out.valid_mask)
    loss.backward()
    assert all(p.grad is not None for p in moco.encoder_q.parameters())


def test_loss_known_answer():
    logits = torch.tensor([[2.0, 1.0, 0.0, 5.0], [0.5, 3.0, -1.0, 0.0]])
    pos = torch.tensor([[True, True, False, False], [False, True, False, False]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    lse0 = math.log(math.exp(2) + math.exp(1) + math.exp(0))  # column 3 is not valid: left out
    lse1 = math.log(math.exp(0.5) + math.exp(3) + math.exp(-1) + math.exp(0))
    expected = (-((2 - lse0) + (1 - lse0)) / 2 + -(3 - lse1)) / 2
    assert multi_positive_info_nce(logits, pos, valid).item() == pytest.approx(expected, rel=1e-6)


def test_loss_lower_when_positives_aligned_than_shuffled():
    gen = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=gen), dim=1)
    labels = torch.arange(4).repeat_interleave(5)  # 4 operators x 5 images
    emb = torch.nn.functional.normalize(centres[labels] + 0.02 * torch.randn(20, 16, generator=gen), dim=1)
    logits = emb @ emb.T / 0.07

    def loss(lab):
        return multi_positive_info_nce(logits, lab[:, None] == lab[None, :]).item()

    aligned = loss(labels)
    shuffled = [loss(labels[torch.randperm(20, generator=gen)]) for _ in range(5)]
    assert aligned < min(shuffled) - 1.0
    # perfectly separated clusters approach the floor log(#positives) = log 5
    assert aligned == pytest.approx(math.log(5), abs=0.3)


# ----------------------------------------------------------------------------- data


def test_sampler_groups_determinism_and_state(ffhq):
    kw = dict(crop_size=48, ops_per_batch=3, images_per_op=4, rescale_range=(0.25, 0.5))
    s = FacePairSampler(ffhq, seed=3, **kw)
    b = s.sample_batch()
    assert b.lq.shape == b.hq.shape == (12, 48, 48, 3) and b.lq.dtype == np.uint8
    groups = b.labels.reshape(3, 4)
    assert (groups == groups[:, :1]).all() and len(set(groups[:, 0])) == 3
    for g in b.image_index.reshape(3, 4):
        assert len(set(g)) == 4, "an operator is applied to different images"
    assert np.abs(b.lq.astype(int) - b.hq.astype(int)).mean() > 1.0, "LQ must differ from the clean crop"
    lq, hq, labels = b.tensors()
    assert lq.shape == (12, 3, 48, 48) and 0.0 <= float(lq.min()) and float(lq.max()) <= 1.0

    state = s.state_dict()
    nxt = s.sample_batch()
    s2 = FacePairSampler(ffhq, seed=3, **kw)
    s2.sample_batch()
    s3 = FacePairSampler(ffhq, seed=3, **kw)
    s3.load_state_dict(json.loads(json.dumps(state)))
    for other in (s2.sample_batch(), s3.sample_batch()):
        assert np.array_equal(other.lq, nxt.lq) and np.array_equal(other.labels, nxt.labels)
    assert len(set(nxt.labels) & set(b.labels)) == 0, "fresh operators get fresh ids"


def test_sampler_presets_and_hq_fn(ffhq):
    calls = []

    def hq_fn(lq, gt):
        calls.append(lq.shape)
        return np.full_like(gt, 128)

    s = FacePairSampler(ffhq, crop_size=48, ops_per_batch=4, images_per_op=2, preset_prob=1.0, hq_fn=hq_fn, seed=0)
    b = s.sample_batch()
    assert set(b.labels) <= {0, 1, 2, 3} and len(calls) == 8 and (b.hq == 128).all()
    with pytest.raises(ValueError, match="images_per_op"):
        FacePairSampler(ffhq[:2], crop_size=48, images_per_op=3)


def test_shared_content_batches_degrade_the_same_crops_by_every_operator(ffhq):
    kw = dict(crop_size=48, ops_per_batch=3, images_per_op=4, rescale_range=(0.25, 0.5))
    shared = FacePairSampler(ffhq, shared_content_prob=1.0, seed=1, **kw).sample_batch()
    idx = shared.image_index.reshape(3, 4)
    assert (idx == idx[:1]).all() and len(set(idx[0])) == 4
    hq = shared.hq.reshape(3, 4, 48, 48, 3)
    assert (hq == hq[:1]).all(), "every operator sees the identical clean crops"
    lq = shared.lq.reshape(3, 4, 48, 48, 3).astype(int)
    assert np.abs(lq[0] - lq[1]).mean() > 1.0, "different operators give different LQ crops"
    fresh = FacePairSampler(ffhq, shared_content_prob=0.0, seed=1, **kw).sample_batch()
    assert not (fresh.image_index.reshape(3, 4) == fresh.image_index.reshape(3, 4)[:1]).all()
    with pytest.raises(ValueError, match="shared_content_prob"):
        FacePairSampler(ffhq, shared_content_prob=1.5, **kw)


def test_reffr_pairs_restore_the_whole_face_from_other_photos_then_crop(ffhq):
    from face2scene_core.imageio import load_image
    from face2scene_core.reffr.transfer import ReferenceTransferRefFR

    faces = [cv2.resize(load_image(p), (64, 64), interpolation=cv2.INTER_AREA) for p in ffhq[:4]]
    calls = []

    class Recording(ReferenceTransferRefFR):
        def _restore(self, lq_face, references):
            calls.append((lq_face.shape, len(references)))
            return super()._restore(lq_face, references)

    reffr = Recording(size=64, levels=3, denoise_levels=3, chroma_levels=3, fallback_denoise_levels=3)
    kw = dict(crop_size=32, ops_per_batch=2, images_per_op=2, rescale_range=(0.25, 0.5),
              reffr_faces=[faces[:2], faces[2:]], reffr=reffr, reffr_prob=1.0, reffr_max_refs=1)
    b = FacePairSampler(ffhq[4:8], seed=0, **kw).sample_batch()
    assert b.lq.shape == b.hq.shape == (4, 32, 32, 3)
    groups = b.image_index.reshape(2, 2)
    assert (groups[:, 0] >= 4).all() and (groups[:, 1] < 4).all(), "per operator: a Ref-FR pair, then a GT pair"
    assert calls == [((64, 64, 3), 1)] * 2, "each Ref-FR pair: the whole aligned face restored from the other photo"
    assert np.abs(b.lq.astype(int) - b.hq.astype(int)).mean() > 1.0
    again = FacePairSampler(ffhq[4:8], seed=0, **kw).sample_batch()
    assert np.array_equal(again.hq, b.hq) and np.array_equal(again.lq, b.lq), "deterministic from the seed"
    only = FacePairSampler(ffhq[4:8], seed=0, **{**kw, "reffr_share": 1.0}).sample_batch()
    assert (only.image_index >= 4).all() and len(calls) == 2 + 2 + 4, "reffr_share=1: Ref-FR pairs only"
    with pytest.raises(ValueError, match="reffr_faces"):
        FacePairSampler(ffhq, crop_size=32, reffr_prob=0.5)
    with pytest.raises(ValueError, match="at least 2 photos"):
        FacePairSampler(ffhq, crop_size=32, reffr_faces=[faces[:1]], reffr=reffr, reffr_prob=0.5, images_per_op=1)


# ----------------------------------------------------------------------------- training


def _cfg(tmp_path: Path, ffhq: list[Path], *overrides: str) -> FaDeXTrainConfig:
    data = str(ffhq[0].parent / "0000?.png")
    return load_config(FaDeXTrainConfig, TINY, [f"data={data}", f"output_dir={tmp_path}", *overrides])


def test_twenty_steps_on_a_fixed_batch_lower_the_loss(ffhq):
    s = FacePairSampler(ffhq, crop_size=48, ops_per_batch=4, images_per_op=3, rescale_range=(0.25, 0.5), seed=0)
    lq, hq, labels = s.sample_batch().tensors()
    moco = MoCoFaDeX(_tiny(), queue_size=8, momentum=0.9).train()
    opt = torch.optim.Adam(moco.encoder_q.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        out = moco(lq, hq, labels, update_queue=False)
        loss = multi_positive_info_nce(out.logits, out.positive_mask, out.valid_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_checkpoint_resume_equals_straight_run(tmp_path, ffhq):
    straight = train_fadex(_cfg(tmp_path / "a", ffhq, "steps=4"))
    train_fadex(_cfg(tmp_path / "b", ffhq, "steps=2"))
    resumed = train_fadex(_cfg(tmp_path / "b", ffhq, "steps=4"), resume=True)
    assert straight.name == "final" and (straight / "config.json").is_file()
    ck_a, ck_b = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    assert sorted(p.name for p in ck_b.iterdir()) == ["step_0000002", "step_0000004"]
    for rel in ("encoder/diffusion_pytorch_model.safetensors", "key_encoder/diffusion_pytorch_model.safetensors",
                "state.safetensors", "optimizer.safetensors"):
        a, b = load_file(ck_a / "step_0000004" / rel), load_file(ck_b / "step_0000004" / rel)
        assert a.keys() == b.keys() and a, rel
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{rel}:{k}")
    fa = FaDeX.from_pretrained(straight).eval()
    fb = FaDeX.from_pretrained(resumed).eval()
    lq, hq = _rand_pair(2, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(fa(lq, hq).embedding, fb(lq, hq).embedding)
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and all(math.isfinite(x["loss"]) for x in lines)
    # a finished run is not overwritten by accident, and resuming with another config is refused
    with pytest.raises(ConfigError, match="resume"):
        train_fadex(_cfg(tmp_path / "b", ffhq, "steps=4"))
    with pytest.raises(ConfigError, match="lr"):
        train_fadex(_cfg(tmp_path / "b", ffhq, "steps=6", "lr=0.01"), resume=True)


def test_training_with_reffr_pairs_uses_train_identities_only(tmp_path, ffhq):
    from face2scene_core.evaluation.reffr import load_heldout_faces

    split = json.loads((REPO / "configs" / "split.json").read_text())
    ids = load_heldout_faces(sources=("faceapi",), size=64, split_key="train_identities")
    assert set(ids) <= set(split["train_identities"]) and not set(ids) & set(split["heldout_identities"])
    final = train_fadex(_cfg(tmp_path, ffhq, "steps=2", "reffr_prob=1.0", "reffr_size=64", "reffr_sources=[faceapi]"))
    assert (final / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["reffr_prob"] == 1.0
    with pytest.raises(ConfigError, match="reffr_size"):
        _cfg(tmp_path, ffhq, "reffr_size=32")


def test_bf16_step_runs_on_cpu(tmp_path, ffhq):
    final = train_fadex(_cfg(tmp_path, ffhq, "steps=1", "bf16=true"))
    rec = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(rec["loss"]) and (final / "diffusion_pytorch_model.safetensors").is_file()


def test_configs_load_and_reject_unknown_keys():
    tiny = load_config(FaDeXTrainConfig, TINY)
    default = load_config(FaDeXTrainConfig, REPO / "configs" / "fadex_default.yaml")
    assert tiny.steps < 50 and default.steps >= 500 and default.eval_data
    assert (default.lr, default.embed_dim) == (1e-4, 256) and 0 < default.reffr_prob < 1  # GT and Ref-FR pairs
    # the shipped encoder is the architecture the default config trains
    shipped = json.loads((REPO / "face2scene_core" / "weights" / "fadex" / "config.json").read_text())
    assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in default.model_kwargs().items()} == \
        {k: shipped[k] for k in default.model_kwargs()}
    with pytest.raises(ConfigError, match="unknown"):
        load_config(FaDeXTrainConfig, TINY, ["queue_sise=8"])
    with pytest.raises(ConfigError, match="temperature"):
        load_config(FaDeXTrainConfig, TINY, ["temperature=0"])


# ----------------------------------------------------------------------------- evaluation


def test_similarity_stats_known_answers():
    rng = np.random.default_rng(0)
    n, p = 5, 4
    by_op = rng.normal(size=(p, 8))
    by_op /= np.linalg.norm(by_op, axis=1, keepdims=True)
    degradation_only = np.broadcast_to(by_op[None], (n, p, 8)).copy()
    st = similarity_stats(degradation_only)
    assert st["top1_accuracy"] == 1.0 and st["same_degradation_different_image"] == pytest.approx(1.0)
    assert np.allclose(np.diag(st["matrix"]), 1.0) and st["gap"] > 0.5
    by_img = rng.normal(size=(n, 8))
    by_img /= np.linalg.norm(by_img, axis=1, keepdims=True)
    content_only = np.broadcast_to(by_img[:, None], (n, p, 8)).copy()
    st2 = similarity_stats(content_only)
    assert st2["top1_accuracy"] == 0.0 and st2["nearest_is_same_image"] == 1.0 and st2["gap"] < 0
    assert st["chance_top1"] == pytest.approx((n - 1) / (n * p - 1))


def test_evaluate_fadex_writes_json_and_png(tmp_path, ffhq):
    model = _tiny().train()
    res = evaluate_fadex(model, ffhq[:3], tmp_path, n_random_ops=3, seed=1, max_side=64)
    assert model.training
    saved = json.loads((tmp_path / "fadex_eval.json").read_text())
    assert saved == json.loads(json.dumps(res))
    assert saved["n_images"] == 3 and saved["presets"]["names"] == sorted(PRESETS)
    for set_name, n_ops in (("presets", 4), ("random", 3)):
        st = saved[set_name]
        for key in ("same_degradation_different_image", "same_image_different_degradation", "gap", "top1_accuracy",
                    "nearest_is_same_image", "chance_top1", "matrix"):
            assert key in st, (set_name, key)
        assert np.asarray(st["matrix"]).shape == (n_ops, n_ops)
        assert -1.0 <= st["same_image_different_degradation"] <= 1.0 and 0.0 <= st["top1_accuracy"] <= 1.0
    assert "presets_gap" in saved["summary"] and "random_top1_accuracy" in saved["summary"]
    with Image.open(tmp_path / "fadex_eval.png") as im:
        assert im.format == "PNG" and im.size[0] > 400
    with pytest.raises(ValueError, match="at least 2"):
        evaluate_fadex(model, ffhq[:1], tmp_path / "x")


def _hf(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))


class _ResidualStats(FaDeX):
    """Hand-built degradation-aware encoder: log statistics of the LQ-HQ residual and of the detail loss."""

    def forward(self, lq, hq):
        out = super().forward(lq, hq)
        r = lq - hq
        feats = torch.stack([r.abs().mean((1, 2, 3)), _hf(r), _hf(lq) / _hf(hq)], dim=1)
        z = torch.log(feats + 1e-4) - torch.tensor([-3.0, -3.0, 0.0])
        return type(out)(features=out.features, embedding=torch.nn.functional.normalize(torch.nn.functional.pad(z, (0, 13)), dim=1))


class _ContentOnly(FaDeX):
    """Hand-built content encoder: statistics of the clean face only (blind to the degradation)."""

    def forward(self, lq, hq):
        out = super().forward(lq, hq)
        z = torch.stack([hq.mean((1, 2, 3)), hq.std((1, 2, 3)), _hf(hq)], dim=1) - 0.3
        return type(out)(features=out.features, embedding=torch.nn.functional.normalize(torch.nn.functional.pad(z, (0, 13)), dim=1))


def test_evaluate_tells_degradation_from_content_encoders(tmp_path, ffhq):
    aware = evaluate_fadex(_ResidualStats(**TINY_MODEL), ffhq[:4], tmp_path / "a", n_random_ops=0, max_side=96)["presets"]
    content = evaluate_fadex(_ContentOnly(**TINY_MODEL), ffhq[:4], tmp_path / "c", n_random_ops=0, max_side=96)["presets"]
    assert aware["gap"] > 0.1 and aware["top1_accuracy"] > 2 * aware["chance_top1"]
    assert content["gap"] < 0 and content["top1_accuracy"] == 0.0 and content["nearest_is_same_image"] == 1.0


def test_eval_fadex_cli_reads_only_the_images_a_glob_matches(tmp_path, ffhq):
    import shutil

    from face2scene_core.cli import main

    faces = tmp_path / "faces"
    faces.mkdir()
    for p in ffhq[:3]:
        shutil.copy(p, faces / p.name)
    (faces / "notes.json").write_text("{}")  # matched by the glob, not an image
    _tiny().save_pretrained(tmp_path / "fadex")
    rc = main(["eval-fadex", "--weights", str(tmp_path / "fadex"), "--images", str(faces / "*"),
               "-o", str(tmp_path / "out")])
    report = json.loads((tmp_path / "out" / "fadex_eval.json").read_text())
    assert rc == 0 and report["n_images"] == 3 and not any(n.endswith(".json") for n in report["image_names"])
    assert len(report["presets"]["top1_per_operator"]) == 4


# ----------------------------------------------------------------------------- photo bank


def _write_bank(folder: Path, groups: int = 5, per_group: int = 4, side: int = 40, norefs: bool = False) -> None:
    """A synthetic bank shard: reffr = lq + 1, gt = lq + 2 and (``norefs``) reffr0 = lq + 3, so a crop's HQ tells which
    source it took and whether it was cut at the same place as its LQ."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    arrays, labels = {}, []
    for n in range(groups * per_group):
        lq = rng.integers(0, 253, size=(side, side, 3), dtype=np.uint8)
        arrays[f"lq_{n}"], arrays[f"reffr_{n}"], arrays[f"gt_{n}"] = lq, lq + 1, lq + 2
        if norefs:
            arrays[f"reffr0_{n}"] = lq + 3
        labels.append(-1 if n // per_group == 0 else n // per_group)
    for key in ("lq", "reffr", "gt") + (("reffr0",) if norefs else ()):
        arrays[f"{key}_{n + 1}"] = np.zeros((20, 20, 3), np.uint8)
    arrays["label"] = np.asarray(labels + [99], np.int64)  # a pair too small for the crop: left out
    arrays["photo"] = np.arange(len(labels) + 1, dtype=np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(folder / "bank_00000.safetensors"))


def test_photo_bank_batches_are_operator_groups_cut_at_one_place(tmp_path):
    from face2scene_core.fadex.photo_bank import BANK_LABEL_OFFSET, PhotoBank

    _write_bank(tmp_path)
    bank = PhotoBank(tmp_path, crop_size=32, ops_per_batch=3, images_per_op=4, reffr_share=1.0)
    assert len(bank) == 20 and sorted(bank.groups) == [-1, 1, 2, 3, 4]
    b = bank.sample_batch(np.random.default_rng(1))
    assert b.lq.shape == b.hq.shape == (12, 32, 32, 3)
    assert np.all((b.hq.astype(int) - b.lq) == 1)  # Ref-FR face, the same crop as the LQ
    labels = b.labels.reshape(3, 4)
    assert np.all(labels == labels[:, :1]) and len(set(labels[:, 0])) == 3 and labels.min() >= BANK_LABEL_OFFSET - 1
    mixed = PhotoBank(tmp_path, crop_size=32, ops_per_batch=5, images_per_op=4, reffr_share=0.5)
    batches = [mixed.sample_batch(np.random.default_rng(seed)) for seed in range(3)]
    diffs = {int(d) for b in batches for d in np.unique(b.hq.astype(int) - b.lq)}
    assert diffs == {1, 2}  # both the Ref-FR and the ground-truth face serve as HQ
    with pytest.raises(ValueError, match="groups"):
        PhotoBank(tmp_path, crop_size=32, ops_per_batch=6, images_per_op=4)
    with pytest.raises(FileNotFoundError, match="photo_bank"):
        PhotoBank(tmp_path / "none", crop_size=32, ops_per_batch=3, images_per_op=4)


def test_photo_bank_serves_the_ref_fr_face_made_without_references_when_asked(tmp_path):
    from face2scene_core.fadex.photo_bank import PhotoBank

    _write_bank(tmp_path / "new", norefs=True)
    _write_bank(tmp_path / "old")  # built before the no-reference face was stored

    def diffs(bank) -> set[int]:
        batches = [bank.sample_batch(np.random.default_rng(seed)) for seed in range(3)]
        return {int(d) for b in batches for d in np.unique(b.hq.astype(int) - b.lq)}

    assert diffs(PhotoBank(tmp_path / "new", crop_size=32, ops_per_batch=3, images_per_op=4, reffr_share=1.0)) == {1}
    assert diffs(PhotoBank(tmp_path / "new", crop_size=32, ops_per_batch=3, images_per_op=4, reffr_share=1.0,
                           norefs_share=1.0)) == {3}
    assert diffs(PhotoBank(tmp_path / "new", crop_size=32, ops_per_batch=5, images_per_op=4, reffr_share=0.7,
                           norefs_share=0.5)) == {1, 2, 3}
    assert diffs(PhotoBank(tmp_path / "old", crop_size=32, ops_per_batch=3, images_per_op=4, reffr_share=1.0,
                           norefs_share=1.0)) == {1}  # falls back to the Ref-FR face with references


def test_two_bank_folders_keep_their_operators_apart_and_share_clean(tmp_path):
    """Group 1 of one bank and group 1 of another are different operators; clean is clean in both."""
    from face2scene_core.fadex.photo_bank import CLEAN_LABEL, PhotoBank

    _write_bank(tmp_path / "a", groups=3)
    _write_bank(tmp_path / "b", groups=4)
    bank = PhotoBank([tmp_path / "a", tmp_path / "b"], crop_size=32, ops_per_batch=3, images_per_op=4)
    assert len(bank) == 28
    assert len(bank.groups) == 6  # 2 + 3 operator groups, and one clean group of 8 pairs
    assert len(bank.groups[CLEAN_LABEL]) == 8
    with pytest.raises(FileNotFoundError, match="none"):
        PhotoBank([tmp_path / "a", tmp_path / "none"], crop_size=32, ops_per_batch=3, images_per_op=4)


def test_training_with_a_photo_bank_resumes_exactly(tmp_path, ffhq):
    _write_bank(tmp_path / "bank", groups=4, per_group=2, side=56)
    _write_bank(tmp_path / "bank2", groups=3, per_group=2, side=56)
    over = [f"photo_bank=[{tmp_path / 'bank'}, {tmp_path / 'bank2'}]", "photo_bank_prob=0.5"]
    straight = train_fadex(_cfg(tmp_path / "a", ffhq, "steps=4", *over))
    train_fadex(_cfg(tmp_path / "b", ffhq, "steps=2", *over))
    resumed = train_fadex(_cfg(tmp_path / "b", ffhq, "steps=4", *over), resume=True)
    fa, fb = load_file(straight / "diffusion_pytorch_model.safetensors"), load_file(resumed / "diffusion_pytorch_model.safetensors")
    for k in fa:
        torch.testing.assert_close(fa[k], fb[k], rtol=1e-5, atol=1e-6, msg=k)
    with pytest.raises(ConfigError, match="photo_bank_prob"):
        _cfg(tmp_path, ffhq, "photo_bank_prob=0.5")  # a probability without a bank


def test_photo_bank_is_made_from_train_photos_the_way_the_pipeline_makes_pairs(tmp_path):
    from safetensors.numpy import load_file as load_np

    from face2scene_core.fadex.photo_bank import CLEAN_LABEL, build_bank

    split = json.loads((REPO / "configs" / "split.json").read_text())
    n = build_bank(tmp_path, groups=2, images_per_group=2, shard_groups=1, max_photos=20,
                   family_weights={"clean": 1.0})
    assert n == 4 and sorted(p.name for p in tmp_path.glob("bank_*")) == ["bank_00000.safetensors", "bank_00001.safetensors"]
    used = json.loads((tmp_path / "photos.json").read_text())
    rel = [str(Path(p).resolve().relative_to(_datasets().resolve())) for p in used["photos"]]
    assert rel and set(rel) <= set(split["train"])
    assert not {str(Path(p).resolve()) for p in used["photos"]} & {str(Path(p).resolve()) for p in used["held_for_eval"]}
    t = load_np(str(tmp_path / "bank_00000.safetensors"))
    assert list(t["label"]) == [CLEAN_LABEL] * 2
    from safetensors import safe_open

    with safe_open(str(tmp_path / "bank_00001.safetensors"), "np") as fh:
        ops = json.loads(fh.metadata()["operators"])
    assert [(o["group"], o["label"], o["family"]) for o in ops] == [(1, CLEAN_LABEL, "clean")] and ops[0]["params"]
    for k in range(2):
        assert (t[f"lq_{k}"].shape == t[f"reffr_{k}"].shape == t[f"reffr0_{k}"].shape == t[f"gt_{k}"].shape
                and min(t[f"lq_{k}"].shape[:2]) >= 128)
        # a clean photo's GT pair differs only by the align-and-warp round trip
        assert np.abs(t[f"lq_{k}"].astype(int) - t[f"gt_{k}"]).mean() < 6
    assert build_bank(tmp_path, groups=2, images_per_group=2, shard_groups=1, max_photos=20) == 4  # complete: kept
    assert list(t["source_q"]) == [0, 0]
    # the same groups started from the photos saved again as JPEG q30: that JPEG is the ground truth, and "clean"
    # leaves it as it is
    build_bank(tmp_path / "src", groups=1, images_per_group=2, shard_groups=1, max_photos=20,
               family_weights={"clean": 1.0}, source_jpeg=(1.0, 30, 30))
    s = load_np(str(tmp_path / "src" / "bank_00000.safetensors"))
    assert list(s["source_q"]) == [30, 30]
    for k in range(2):
        assert np.abs(s[f"gt_{k}"].astype(int) - t[f"gt_{k}"]).mean() > 1.0  # not the photo as it was
        assert np.abs(s[f"lq_{k}"].astype(int) - s[f"gt_{k}"]).mean() < 6


# ----------------------------------------------------------------------------- head re-fit


def test_retrieval_across_photos_known_answer():
    from face2scene_core.evaluation.photos import retrieval_across_photos

    e = np.eye(3)[None].repeat(2, axis=0)  # 2 photos x 3 operators, each operator its own direction
    assert retrieval_across_photos(e) == (1.0, [1.0, 1.0, 1.0])
    e[1, 2] = e[1, 1]  # photo 1's operator 2 looks like operator 1
    top1, per_op = retrieval_across_photos(e)
    assert per_op == [1.0, 1.0, 0.0] and top1 == pytest.approx(4 / 6)  # both operator-2 codes find operator 1


def test_head_refit_changes_the_embedding_only_and_learns_the_operators(tmp_path):
    """Re-fitting the head leaves the feature map (the restorer's input) bit-identical and, on pooled features whose
    operator signal is there but swamped by a per-photo offset, learns to retrieve the operator across photos."""
    from face2scene_core.fadex.head import HQ_KINDS, retrieval, train_head

    torch.manual_seed(0)
    model = FaDeX(channels=(8, 16, 32), blocks_per_stage=(1, 1, 1), embed_dim=16, proj_hidden=32)
    x = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)
    before = model.eval()(*x)
    gen = torch.Generator().manual_seed(1)
    content = torch.zeros(32, 32)
    content[16:, 16:] = torch.eye(16)  # photo content lives in channels 16-31, the operators in 0-15
    ops = torch.randn(6, 32, generator=gen) * 0.5
    ops[:, 16:] = 0
    photos = torch.randn(40, 32, generator=gen) @ content * 3.0
    label = torch.arange(6).repeat_interleave(40)  # 6 operators x 40 photos
    feats = {k: ops[label] + photos[torch.arange(240) % 40] + 0.05 * torch.randn(240, 32, generator=gen)
             for k in HQ_KINDS}
    feats["label"] = label
    check = {k: ops[None] + torch.randn(8, 1, 32, generator=gen) @ content * 3.0 for k in ("gt", "reffr")}
    start = retrieval(model.head.eval(), check)
    state, fig = train_head(model, feats, steps=300, seed=0, lr=3e-3, groups_per_batch=6, check=check, eval_every=100,
                            keep="best")
    model.head.load_state_dict(state)
    after = retrieval(model.head.eval(), check)
    assert after == {k: v for k, v in fig.items() if k != "step"}
    assert after["gt"] >= 0.95 and after["reffr"] >= 0.95 and start["gt"] < 0.8, (start, after)
    model.eval()
    out = model(*x)
    torch.testing.assert_close(out.features, before.features, rtol=0, atol=0)
    assert not torch.allclose(out.embedding, before.embedding)


def test_bank_features_pool_each_hq_kind_and_are_cached_per_encoder(tmp_path, monkeypatch):
    from face2scene_core.fadex import head as head_mod
    from face2scene_core.fadex.photo_bank import BANK_FOLDER_STRIDE

    _write_bank(tmp_path / "new", groups=3, norefs=True)
    _write_bank(tmp_path / "old", groups=2)
    torch.manual_seed(0)
    model = FaDeX(channels=(8, 16, 32), blocks_per_stage=(1, 1, 1), embed_dim=16, proj_hidden=32).eval()
    feats = head_mod.bank_features(model, [tmp_path / "new", tmp_path / "old"], tmp_path / "cache")
    assert feats["gt"].shape == feats["reffr"].shape == feats["reffr0"].shape == (22, 32)  # (12 + 1) + (8 + 1) pairs
    assert feats["label"].tolist()[:13] == [-1] * 4 + [1] * 4 + [2] * 4 + [99]
    assert not torch.allclose(feats["reffr0"][:12], feats["reffr"][:12])  # the bank's own no-reference face
    torch.testing.assert_close(feats["reffr0"][13:], feats["reffr"][13:])  # an older bank: the Ref-FR face stands in
    t = load_file(str(tmp_path / "new" / "bank_00000.safetensors"))
    one = model(t["lq_0"].permute(2, 0, 1)[None].float() / 255,
                t["gt_0"].permute(2, 0, 1)[None].float() / 255).features.mean(dim=(2, 3))[0]
    torch.testing.assert_close(feats["gt"][0], one, rtol=1e-4, atol=1e-5)  # the whole stored crop, mean-pooled
    real = head_mod._bank_features
    monkeypatch.setattr(head_mod, "_bank_features", lambda *a: pytest.fail("recomputed despite the cache"))
    again = head_mod.bank_features(model, [tmp_path / "new", tmp_path / "old"], tmp_path / "cache")
    torch.testing.assert_close(again["reffr"], feats["reffr"])
    _write_bank(tmp_path / "third", groups=2)  # a bank added later: only its own pairs are computed
    calls = []
    monkeypatch.setattr(head_mod, "_bank_features", lambda m, folders: calls.append(folders) or real(m, folders))
    more = head_mod.bank_features(model, [tmp_path / "new", tmp_path / "old", tmp_path / "third"], tmp_path / "cache")
    assert calls == [[tmp_path / "third"]] and more["label"].shape == (31,)  # 22 + (8 + 1)
    torch.testing.assert_close(more["gt"][:22], feats["gt"])
    s = BANK_FOLDER_STRIDE  # the third folder's groups are its own; clean pairs share one group
    assert more["label"].tolist()[22:] == [-1] * 4 + [1 + 2 * s] * 4 + [99 + 2 * s]
    monkeypatch.setattr(head_mod, "_bank_features", lambda *a: pytest.fail("recomputed despite the cache"))
    with torch.no_grad():
        model.encoder[0][0].weight.add_(0.1)  # another encoder: the cache does not apply
    with pytest.raises(pytest.fail.Exception, match="recomputed"):
        head_mod.bank_features(model, [tmp_path / "new", tmp_path / "old"], tmp_path / "cache")


def test_head_refit_command_writes_a_fadex_folder_with_the_encoder_untouched(tmp_path):
    """`python -m face2scene_core.fadex.head` on a (synthetic) bank: OUT/final loads as a FaDeX whose encoder is the
    input's to the bit and whose head moved; a second run reads the cached features."""
    from face2scene_core.fadex.head import main
    from face2scene_core.training.stage2 import load_fadex

    _write_bank(tmp_path / "bank", groups=6, norefs=True, side=48)
    src = REPO / "face2scene_core" / "weights" / "fadex"
    args = ["--fadex", str(src), "--bank", str(tmp_path / "bank"), "--out", str(tmp_path / "out"), "--steps", "20",
            "--check-part", "none", "--eval-every", "10", "--groups-per-batch", "4"]
    with pytest.raises(ValueError, match="6 operator groups.*needs 32"):
        main(args[:-2])
    assert main(args) == 0
    new, old = load_fadex(str(tmp_path / "out" / "final")), load_fadex(str(src))
    for (name, a), b in zip(new.state_dict().items(), old.state_dict().values()):
        assert torch.equal(a, b) == (not name.startswith("head.")), name
    fit = json.loads((tmp_path / "out" / "head_fit.json").read_text())
    assert fit["chosen"]["step"] == 20 and fit["args"]["keep"] == "last"
    (cache,) = (tmp_path / "out").glob("bank_features_*.safetensors")
    mtime = cache.stat().st_mtime_ns
    assert main(args) == 0 and cache.stat().st_mtime_ns == mtime


def test_pooling_mean_and_std_of_several_stages_feeds_the_head_and_leaves_the_features_alone():
    """``pool_stages`` / ``pool_std`` change only what the embedding head reads: the feature map (MapNet's input) is
    the same, the head's input is each pooled stage's channel means then standard deviations, and a FaDeX re-pooled
    by ``with_pool`` keeps its encoder bit-identical."""
    from face2scene_core.fadex.head import pooled_features, with_pool

    torch.manual_seed(0)
    mean_only = FaDeX(channels=(8, 16, 32), blocks_per_stage=(1, 2, 1), embed_dim=16, proj_hidden=32).eval()
    both = with_pool(mean_only, 2, True)
    assert both.head[0].in_features == (16 + 32) * 2 and both.config.pool_std and not both.training
    for a, b in zip(mean_only.encoder.state_dict().values(), both.encoder.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.rand(2, 6, 40, 40) * 2 - 1
    f1, p1 = mean_only.encode(x)
    f2, p2 = both.encode(x)
    torch.testing.assert_close(f1, f2, rtol=0, atol=0)
    torch.testing.assert_close(p1, f1.mean(dim=(2, 3)))
    mid = both.encoder[:3](x)  # the second stage ends after encoder layer 2
    torch.testing.assert_close(p2, torch.cat([mid.mean(dim=(2, 3)), mid.std(dim=(2, 3)), f2.mean(dim=(2, 3)),
                                              f2.std(dim=(2, 3))], dim=1))
    assert with_pool(both, 2, True) is both
    with pytest.raises(ValueError, match="pool_stages"):
        FaDeX(channels=(8, 16), blocks_per_stage=(1, 1), pool_stages=3)
    flat = np.full((48, 48, 3), 128, np.uint8)
    grain = np.clip(128 + np.random.default_rng(0).choice([-40, 40], size=(48, 48, 3)), 0, 255).astype(np.uint8)
    pooled = pooled_features(both, [flat, grain], [flat, flat])
    assert pooled.shape == (2, 96)
    assert both(torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)).embedding.shape == (1, 16)
    assert (pooled[1, 16:32] - pooled[0, 16:32]).abs().max() > 1e-3  # the mid stage's spread differs with grain


def test_head_standardisation_is_a_reparametrisation_folded_back_before_saving(tmp_path):
    """The head trains on standardised pooled features; re-parametrising keeps its function, and undoing it folds the
    standardisation into the first layer (the saved FaDeX reads raw pooled features). The command with another
    pooling writes a FaDeX that pools that way, its encoder untouched."""
    from face2scene_core.fadex.head import main, standardise_head
    from face2scene_core.training.stage2 import load_fadex

    torch.manual_seed(0)
    head = FaDeX(channels=(8, 16), blocks_per_stage=(1, 1), pool_std=True).head.eval()
    x = torch.randn(5, 32) * torch.logspace(-3, 2, 32) + 3.0
    mean, std = x.mean(0), x.std(0)
    before = head(x)
    standardise_head(head, mean, std)
    torch.testing.assert_close(head((x - mean) / std), before, rtol=1e-4, atol=1e-4)
    standardise_head(head, mean, std, undo=True)
    torch.testing.assert_close(head(x), before, rtol=1e-4, atol=1e-4)

    _write_bank(tmp_path / "bank", groups=6, norefs=True, side=48)
    src = REPO / "face2scene_core" / "weights" / "fadex"
    assert main(["--fadex", str(src), "--bank", str(tmp_path / "bank"), "--out", str(tmp_path / "out"), "--steps",
                 "10", "--check-part", "none", "--groups-per-batch", "4", "--pool-stages", "2", "--pool-std",
                 "yes"]) == 0
    new, old = load_fadex(str(tmp_path / "out" / "final")), load_fadex(str(src))
    assert (new.config.pool_stages, new.config.pool_std) == (2, True)
    from face2scene_core.fadex.pair_stats import N_PAIR_STATS

    assert new.head[0].in_features == 2 * sum(old.config.channels[-2:]) + (N_PAIR_STATS if old.config.pair_stats else 0)
    for a, b in zip(new.encoder.state_dict().values(), old.encoder.state_dict().values()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- pair statistics


def test_pair_stats_read_jpeg_noise_and_blur_on_real_faces(ffhq):
    """The 14 classic statistics the head can read beside the pooled features: JPEG q30 shows an 8 px grid and loses
    chroma detail, Gaussian noise raises the noise level over the HQ face's, a blur removes the top band; a face
    paired with itself has no difference."""
    from face2scene_core.fadex.pair_stats import N_PAIR_STATS, pair_stats

    def t(a):
        return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255.0

    rng = np.random.default_rng(0)
    for path in ffhq[:3]:
        img = np.asarray(Image.open(path).convert("RGB"))
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 30])
        jpeg = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
        noisy = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        blur = cv2.GaussianBlur(img, (0, 0), 2.0)
        same, j, n, b = (pair_stats(t(lq), t(img))[0] for lq in (img, jpeg, noisy, blur))
        assert same.shape == (N_PAIR_STATS,)
        assert same[[3, 7, 8, 9, 12, 13]].abs().max() < 1e-5  # no difference from the HQ face
        assert min(j[0], j[1]) > 0.3 > 0.15 > max(same[0], same[1])  # blockiness
        assert max(j[12], j[13]) < -0.8  # chroma detail gone
        assert n[3] > 0.9 and n[2] > same[2] + 0.9  # noise above the HQ face's
        assert b[7] < -3.0 and b[4] < same[4] - 2.5  # the top band gone
    batch = pair_stats(torch.rand(2, 3, 40, 56), torch.rand(2, 3, 40, 56))
    assert batch.shape == (2, N_PAIR_STATS) and torch.isfinite(batch).all()
    with pytest.raises(ValueError, match="one shape"):
        pair_stats(torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 48))


def test_pair_stats_head_starts_as_the_loaded_one_and_leaves_the_features_alone(tmp_path):
    """``--pair-stats yes``: the head also reads the statistics, its other weights from the loaded head (so with no
    step the embedding is the loaded FaDeX's), the feature map (MapNet's input) bit-identical; the statistics of a
    bank folder are cached apart from the encoder's pooled features, and the saved FaDeX reads them itself."""
    from face2scene_core.fadex.head import main, pooled_features, with_pool
    from face2scene_core.fadex.pair_stats import N_PAIR_STATS, pair_stats
    from face2scene_core.training.stage2 import load_fadex

    plain = _tiny().eval()
    stats = with_pool(plain, 1, False, True).eval()
    assert stats.config.pair_stats and stats.head[0].in_features == plain.head[0].in_features + N_PAIR_STATS
    lq, hq = _rand_pair(2, 48, 48)
    a, b = plain(lq, hq), stats(lq, hq)
    torch.testing.assert_close(a.features, b.features, rtol=0, atol=0)
    torch.testing.assert_close(a.embedding, b.embedding)  # the statistics' weights start at zero
    x = (torch.cat([lq, hq], dim=1)) * 2 - 1
    torch.testing.assert_close(stats.encode(x)[1][:, -N_PAIR_STATS:], pair_stats(lq, hq))
    with pytest.raises(ValueError, match="in_channels=6"):
        FaDeX(**{**TINY_MODEL, "in_channels": 4, "pair_stats": True})

    _write_bank(tmp_path / "bank", groups=6, norefs=True, side=48)
    src = REPO / "face2scene_core" / "weights" / "fadex"
    old = load_fadex(str(src)).float().eval()
    args = ["--fadex", str(src), "--bank", str(tmp_path / "bank"), "--out", str(tmp_path / "out"), "--check-part",
            "none", "--groups-per-batch", "4", "--pair-stats", "yes"]
    assert main(args + ["--steps", "0"]) == 0
    new = load_fadex(str(tmp_path / "out" / "final")).float().eval()
    assert new.config.pair_stats and len(list((tmp_path / "out").glob("bank_stats_*.safetensors"))) == 1
    face = np.asarray(Image.open(REPO / "example_inputs" / "astronaut_lq.png").convert("RGB"))[:96, :96]
    blurred = cv2.GaussianBlur(face, (0, 0), 1.5)
    torch.testing.assert_close(new.encode_pair(blurred, face).features, old.encode_pair(blurred, face).features,
                               rtol=0, atol=0)
    torch.testing.assert_close(new.encode_pair(blurred, face).embedding, old.encode_pair(blurred, face).embedding,
                               rtol=1e-4, atol=1e-4)
    assert pooled_features(new, [blurred], [face]).shape == (1, new.head[0].in_features)
    assert main(args + ["--steps", "5"]) == 0  # trains, the statistics read from the cache
    moved = load_fadex(str(tmp_path / "out" / "final")).float().eval()
    assert not torch.equal(moved.head[0].weight[:, -N_PAIR_STATS:], torch.zeros_like(moved.head[0].weight[:, -N_PAIR_STATS:]))
