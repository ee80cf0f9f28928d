"""MapNet: FaDeX features -> 21 degradation tokens (shapes, differential attention, errors, save/load)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from face2scene_core.mapnet.model import DifferentialAttention, MapNet


@pytest.fixture(scope="module")
def mapnet() -> MapNet:
    torch.manual_seed(0)
    return MapNet(in_channels=32, token_dim=48, mlp_hidden=64).eval()


@pytest.mark.parametrize("size", [(7, 7), (8, 8), (8, 13), (32, 32), (60, 36)])
@pytest.mark.parametrize("batch", [1, 3])
def test_output_is_21_tokens_of_token_dim(mapnet, size, batch):
    feats = torch.randn(batch, 32, *size)
    tokens = mapnet(feats)
    assert tokens.shape == (batch, 21, 48)
    assert torch.isfinite(tokens).all()
    # each token is LayerNorm-ed (default affine init: zero mean, unit variance per token)
    assert torch.allclose(tokens.mean(-1), torch.zeros(batch, 21), atol=1e-4)


def test_default_width_matches_sd_turbo_cross_attention():
    assert MapNet(in_channels=16, mlp_hidden=32).eval()(torch.randn(1, 16, 8, 8)).shape == (1, 21, 1024)


def test_samples_in_a_batch_are_independent(mapnet):
    feats = torch.randn(3, 32, 12, 12)
    with torch.no_grad():
        together = mapnet(feats)
        alone = torch.cat([mapnet(f[None]) for f in feats])
    assert torch.allclose(together, alone, atol=1e-5)


def test_tokens_see_where_the_degradation_is(mapnet):
    """A change confined to one corner changes that corner's 4x4-grid token more than the opposite corner's."""
    feats = torch.randn(1, 32, 16, 16)
    changed = feats.clone()
    changed[..., :4, :4] += 3.0  # top-left quarter of the top-left 2x2 cell
    with torch.no_grad():
        diff = (mapnet(changed) - mapnet(feats)).norm(dim=-1)[0]  # 21
    fine = diff[5:]  # the 16 cells of the 4x4 grid, row-major
    assert fine[0] > 2 * fine[15]


def test_lambda_is_a_trainable_scalar_that_matters():
    torch.manual_seed(1)
    net = MapNet(in_channels=16, token_dim=24, mlp_hidden=32, lambda_init=0.8)
    lam = net.attn.lambda_
    assert lam.ndim == 0 and lam.requires_grad and abs(lam.item() - 0.8) < 1e-6
    assert any(p is lam for p in net.parameters())
    feats = torch.randn(2, 16, 9, 9)
    net(feats).square().sum().backward()
    assert lam.grad is not None and lam.grad.abs() > 0
    with torch.no_grad():
        before = net(feats)
        lam.fill_(0.1)
        after = net(feats)
    assert not torch.allclose(before, after)


def test_differential_attention_matches_explicit_formula():
    """out = RMSNorm((A1 - lambda A2) V) * (1 - lambda_init), projected: checked against a naive version."""
    torch.manual_seed(2)
    c, heads, n = 16, 4, 10
    attn = DifferentialAttention(dim=c, heads=heads, lambda_init=0.5)
    with torch.no_grad():
        attn.lambda_.fill_(0.3)
    x = torch.randn(2, n, 2 * c)
    d = c // heads
    q1, k1 = attn.to_qk1(x[..., :c]).chunk(2, -1)
    q2, k2 = attn.to_qk2(x[..., c:]).chunk(2, -1)
    v = attn.to_v(x)

    def heads_of(t):
        return t.reshape(2, n, heads, -1).transpose(1, 2)

    a1 = torch.softmax(heads_of(q1) @ heads_of(k1).transpose(-1, -2) / d**0.5, -1)
    a2 = torch.softmax(heads_of(q2) @ heads_of(k2).transpose(-1, -2) / d**0.5, -1)
    out = (a1 - 0.3 * a2) @ heads_of(v)  # b, h, n, 2c/h
    out = out * torch.rsqrt(out.pow(2).mean(-1, keepdim=True) + 1e-6) * attn.norm.weight * 0.5
    ref = attn.to_out(out.transpose(1, 2).reshape(2, n, 2 * c))
    assert torch.allclose(attn(x), ref, atol=1e-5)


def test_too_small_features_raise_a_clear_value_error(mapnet):
    with pytest.raises(ValueError, match=r"6x9 are too small.*at least 7x7"):
        mapnet(torch.randn(1, 32, 6, 9))


@pytest.mark.parametrize(
    "feats, message",
    [(torch.randn(1, 16, 8, 8), "32-channel"), (torch.randn(32, 8, 8), r"\(B, C, h, w\)")],
)
def test_wrong_features_raise_value_error(mapnet, feats, message):
    with pytest.raises(ValueError, match=message):
        mapnet(feats)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"num_heads": 7}, "num_heads"), ({"in_channels": 30}, "in_channels"), ({"lambda_init": 1.5}, "lambda_init"),
     ({"grid_sizes": (1, 0)}, "grid_sizes"), ({"max_attention_side": 2}, "max_attention_side")],
)
def test_bad_constructor_arguments_name_the_value(kwargs, name):
    args = {"in_channels": 32, "token_dim": 16, "mlp_hidden": 16, **kwargs}
    with pytest.raises(ValueError, match=name):
        MapNet(**args)


def test_large_faces_are_pooled_before_attention():
    net = MapNet(in_channels=16, token_dim=16, mlp_hidden=16, max_attention_side=8).eval()
    seen = {}

    def record(module, inputs, output):
        seen["n"] = inputs[0].shape[1]

    net.attn.register_forward_hook(record)
    with torch.no_grad():
        assert net(torch.randn(1, 16, 200, 120)).shape == (1, 21, 16)
    assert seen["n"] == 8 * 8


def test_save_pretrained_round_trip_is_exact(mapnet, tmp_path):
    mapnet.save_pretrained(tmp_path / "mapnet")
    assert (tmp_path / "mapnet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = MapNet.from_pretrained(tmp_path / "mapnet", use_safetensors=True).eval()
    feats = torch.randn(2, 32, 10, 10)
    with torch.no_grad():
        assert torch.equal(mapnet(feats), loaded(feats))
    assert F.mse_loss(loaded.attn.lambda_, mapnet.attn.lambda_) == 0
