"""The one-step restorer on tiny configs: codecs, CFG, tokens, tiling, colour fix, adapters, LoRA, SD loading."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from face2scene_core.errors import ArchitectureMismatchError, FaceTooSmallError, WeightsNotFoundError
from face2scene_core.restorer import sd_turbo as st
from face2scene_core.restorer.codecs import PixelUnshuffleCodec, VAECodec
from face2scene_core.restorer.colorfix import adain_color_fix, wavelet_color_fix, wavelet_decompose
from face2scene_core.restorer.loading import restorer_from_adapter
from face2scene_core.restorer.model import OneStepRestorer
from face2scene_core.restorer.tiling import ramp, tile_starts

TOKEN_DIM = 32
FEATURES = 16


def small_restorer(seed: int = 0, token_dim: int = TOKEN_DIM) -> OneStepRestorer:
    return OneStepRestorer.small(
        feature_channels=FEATURES, token_dim=token_dim, block_out_channels=(32, 64), layers_per_block=1,
        attention_heads=2, self_attention=(False, True), n_prompt_tokens=3, identity_init=False, seed=seed,
        cfg_scale=1.07, mapnet_kwargs={"mlp_hidden": 32, "num_heads": 2},
    ).eval()


def sd_like_restorer(seed: int = 0, **kwargs) -> OneStepRestorer:
    from face2scene_core.mapnet.model import MapNet

    components = st.build_tiny_sd_like(cross_attention_dim=TOKEN_DIM, seed=seed, with_text_encoder=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prompts = torch.randn(2, 77, TOKEN_DIM)
        mapnet = MapNet(in_channels=FEATURES, token_dim=TOKEN_DIM, mlp_hidden=32, num_heads=2)
    return st.restorer_from_components(components, mapnet=mapnet, prompt_embeds=prompts, **kwargs).eval()


def perturb_lora(restorer: OneStepRestorer, seed: int = 0, scale: float = 0.05) -> None:
    """Give LoRA B matrices (zero at init) random values so the adapters actually change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in restorer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="module")
def small() -> OneStepRestorer:
    return small_restorer()


@pytest.fixture(scope="module")
def sd_like() -> OneStepRestorer:
    r = sd_like_restorer()
    perturb_lora(r)
    return r


def features(batch: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, FEATURES, size, size, generator=torch.Generator().manual_seed(seed))


def smooth_image(h: int, w: int) -> torch.Tensor:
    """A smooth colour image (1, 3, h, w) in [0, 1]: ramps and a slow sinusoid, no texture."""
    y = torch.linspace(0, 1, h)[:, None]
    x = torch.linspace(0, 1, w)[None, :]
    img = torch.stack([0.2 + 0.6 * x * torch.ones_like(y), 0.3 + 0.4 * y * torch.ones_like(x),
                       0.5 + 0.2 * torch.sin(2 * math.pi * (x + y))])
    return img[None].clamp(0, 1)


# ------------------------------------------------------------------------------------------ codecs
def test_pixel_unshuffle_codec_round_trip_is_exact():
    codec = PixelUnshuffleCodec(4)
    x = torch.rand(2, 3, 24, 40) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 48, 6, 10) and codec.latent_channels == 48 and codec.downscale == 4
    assert torch.equal(codec.decode(z), x)
    with pytest.raises(ValueError, match="divisible by 4"):
        codec.encode(torch.rand(1, 3, 22, 40))
    with pytest.raises(ValueError, match="factor"):
        PixelUnshuffleCodec(0)


def test_vae_codec_scales_the_latent_mean():
    vae = st.build_tiny_sd_like(cross_attention_dim=TOKEN_DIM, with_text_encoder=False).vae
    x = torch.rand(1, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x)
        mean = super(VAECodec, vae).encode(x).latent_dist.mean
        assert z.shape == (1, 4, 8, 12)
        assert torch.allclose(z, mean * vae.config.scaling_factor)
        assert vae.decode(z).shape == x.shape


# ------------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("backend", ["small", "sd_like"])
def test_forward_shape_range_and_gradients(request, backend):
    r = small_restorer() if backend == "small" else sd_like_restorer()
    r.train()
    lq = torch.rand(2, 3, 37, 50)
    tokens = r.tokens_from_features(features(2))
    out = r(lq, tokens, cfg_scale=1.0)
    assert out.shape == lq.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    (out - lq).square().mean().backward()
    trainable = r.trainable_parameters()
    assert trainable and all(p.requires_grad for p in trainable)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in r.mapnet.parameters())
    assert all(p.grad is None for p in r.parameters() if not p.requires_grad)


def test_untrained_small_model_is_the_identity():
    r = OneStepRestorer.small(feature_channels=FEATURES, token_dim=TOKEN_DIM, block_out_channels=(32, 64),
                              self_attention=(False, True), mapnet_kwargs={"mlp_hidden": 32}).eval()
    lq = torch.rand(1, 3, 30, 45)
    assert torch.allclose(r.restore(lq, r.tokens_from_features(features())), lq, atol=1e-6)


def test_bf16_autocast_stays_close_to_fp32(small):
    lq = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    tokens = small.tokens_from_features(features())
    fp32 = small.restore(lq, tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = small.restore(lq, tokens)
    assert bf16.dtype == torch.float32 and bf16.shape == lq.shape
    assert (bf16 - fp32).abs().mean() < 0.05 * (fp32 - lq).abs().mean()


def test_tokens_change_the_output_and_none_is_the_no_token_ablation(small):
    lq = torch.rand(1, 3, 32, 32)
    a = small.restore(lq, small.tokens_from_features(features(seed=1)))
    b = small.restore(lq, small.tokens_from_features(features(seed=2)))
    none = small.restore(lq, None)
    assert none.shape == lq.shape
    assert (a - b).abs().max() > 1e-4 and (a - none).abs().max() > 1e-4


def test_tokens_from_too_small_features_raise_face_too_small(small):
    with pytest.raises(FaceTooSmallError, match="too small"):
        small.tokens_from_features(torch.randn(1, FEATURES, 5, 5))


@pytest.mark.parametrize("kwargs, name", [
    ({"color_fix": "sepia"}, "color_fix"), ({"tile_size": 8}, "tile_size"),
    ({"tile_size": 64, "tile_overlap": 40}, "tile_overlap"), ({"cfg_scale": 0.0}, "cfg_scale"),
])
def test_bad_restore_arguments_raise_value_error(small, kwargs, name):
    with pytest.raises(ValueError, match=name):
        small.restore(torch.rand(1, 3, 32, 32), **kwargs)


def test_bad_tokens_and_images_raise_value_error(small):
    with pytest.raises(ValueError, match="tokens"):
        small.restore(torch.rand(1, 3, 32, 32), torch.randn(1, 21, TOKEN_DIM + 1))
    with pytest.raises(ValueError, match="lq"):
        small.restore(torch.rand(1, 4, 32, 32))


# ------------------------------------------------------------------------------------------ CFG
@pytest.mark.parametrize("backend", ["small", "sd_like"])
def test_cfg_batch_of_two_equals_two_separate_passes(request, backend):
    r = request.getfixturevalue(backend)
    lq = torch.rand(2, 3, 32, 32)
    tokens = r.tokens_from_features(features(2))
    batch_sizes = []
    hook = r.unet.register_forward_pre_hook(lambda m, args: batch_sizes.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            z = r.encode(lq * 2 - 1)
            guided = r.denoise(z, tokens, 1.5)
            assert batch_sizes == [4]  # positive and negative in ONE batch of 2B
            pos = r.unet_output(z, r.build_context(tokens, 2, 0))
            neg = r.unet_output(z, r.build_context(tokens, 2, 1))
            manual = r.x0_from_output(z, neg + 1.5 * (pos - neg))
            # epsilon -> x0 divides by sqrt(alpha_bar_999) ~ 0.068: float noise grows ~15x, hence 1e-4
            assert torch.allclose(guided, manual, rtol=1e-4, atol=1e-4)
            batch_sizes.clear()
            plain = r.denoise(z, tokens, 1.0)
            assert batch_sizes == [2]  # s == 1 skips the negative branch
            assert torch.allclose(plain, r.x0_from_output(z, pos), rtol=1e-4, atol=1e-4)
            assert (guided - plain).abs().max() > 1e-4
    finally:
        hook.remove()


def test_x0_formulas_invert_the_forward_process(sd_like):
    """x_t = sqrt(ab) x0 + sqrt(1-ab) eps: each prediction type recovers x0 from its own target."""
    r = sd_like
    ab = float(r._sqrt_ab**2)
    x0, eps = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    xt = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps
    for kind, target in [("epsilon", eps), ("v_prediction", ab**0.5 * eps - (1 - ab) ** 0.5 * x0),
                         ("sample", x0), ("residual", x0 - xt)]:
        r.prediction_type = kind
        assert torch.allclose(r.x0_from_output(xt, target), x0, atol=1e-4), kind
    r.prediction_type = "epsilon"


# ------------------------------------------------------------------------------------------ tiling
def test_tile_layout_and_ramps():
    assert tile_starts(10, 16, 4) == [0]
    assert tile_starts(40, 16, 4) == [0, 12, 24]
    starts = tile_starts(100, 16, 4)
    assert starts[0] == 0 and starts[-1] == 84 and all(0 < b - a <= 12 for a, b in zip(starts, starts[1:]))
    w = ramp(16, 4, 6)
    assert torch.allclose(w[:4] + ramp(16, 0, 4)[-4:], torch.ones(4))  # partition of unity over a shared region
    assert w[0] < 0.2 and w[-1] < 0.1 and w[4:10].eq(1).all()
    with pytest.raises(ValueError):
        tile_starts(40, 16, 9)


def test_tiled_restore_equals_untiled_when_the_image_fits_one_tile(small):
    lq = torch.rand(1, 3, 45, 61)
    tokens = small.tokens_from_features(features())
    whole = small.restore(lq, tokens)
    tiled = small.restore(lq, tokens, tile_size=64, tile_overlap=16)
    assert tiled.shape == lq.shape
    assert torch.allclose(whole, tiled, atol=1e-6)


class _TileStatsUNet(torch.nn.Module):
    """Stand-in UNet with the two causes of tiling seams in real UNets, in a controlled amount: statistics of the
    whole input (GroupNorm / self-attention) and zero-padded local filtering. Output (residual) = pull towards the
    tile mean and towards a zero-padded local average, so each naive tile gets its own offset and dark edges."""

    def __init__(self, channels: int = 48, width: int = TOKEN_DIM):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(in_channels=channels, out_channels=channels, cross_attention_dim=width,
                                      block_out_channels=(32, 64))
        self.gain = torch.nn.Parameter(torch.tensor(0.25))

    def forward(self, z, t, encoder_hidden_states):
        from types import SimpleNamespace

        tile_mean = z.mean(dim=(-2, -1), keepdim=True)
        local = torch.nn.functional.avg_pool2d(z, 5, stride=1, padding=2, count_include_pad=True)
        return SimpleNamespace(sample=self.gain * ((tile_mean - z) + (local - z)))


def _seam_scores(img: torch.Tensor, axis: int, period: int = 4) -> torch.Tensor:
    """Discontinuity score per border between neighbouring columns (axis=-1) or rows (axis=-2): squared step,
    averaged along the border, over the mean squared step of the borders one ``period`` (latent cell) before and
    after it (same phase of the latent grid). ~1 on smooth content, even where its slope changes slowly;
    >> 1 at a step. Entry i is for border i + period (after pixel i + period)."""
    step = img.diff(dim=axis).square().mean(dim=(0, 1, 2 if axis == -1 else 3))  # n - 1
    neighbours = (step[: -2 * period] + step[2 * period:]) / 2
    return step[period:-period] / (neighbours + 1e-12)


def test_tiled_restore_has_no_seams_where_naive_tiles_do():
    """On a smooth image, naive tiles make steps at their borders; overlapping blended tiles do not."""
    r = OneStepRestorer(_TileStatsUNet(), PixelUnshuffleCodec(4), torch.zeros(2, 3, TOKEN_DIM),
                        prediction_type="residual", cfg_scale=1.0, channels_last=False).eval()
    lq = smooth_image(128, 192) * 0.8 + 0.1
    tile = 64  # the image is a multiple of the tile: naive tiles meet exactly at multiples of 64
    naive = r.restore(lq, tile_size=tile, tile_overlap=0)
    blended = r.restore(lq, tile_size=tile, tile_overlap=24)
    whole = r.restore(lq)
    off, edge = 4, 8  # score i is for border i + off; skip 8 px at the image edges (zero padding there)
    for axis in (-1, -2):
        naive_scores, blended_scores = _seam_scores(naive, axis), _seam_scores(blended, axis)
        junctions = [b - off for b in range(tile - 1, lq.shape[axis] - 1, tile)]  # where naive tiles meet
        assert naive_scores[junctions].min() > 5.0, axis  # the detector sees every naive seam
        assert blended_scores[edge:-edge].max() < 1.5, axis  # and no seam anywhere in the blended output
        assert _seam_scores(whole, axis)[edge:-edge].max() < 1.5, axis
    assert (blended - whole).abs().mean() < (naive - whole).abs().mean()


def test_tiled_restore_keeps_exact_size_and_fills_timings(sd_like):
    lq = torch.rand(1, 3, 50, 75)
    timings = {}
    out = sd_like.restore(lq, sd_like.tokens_from_features(features()), tile_size=32, tile_overlap=8,
                          color_fix="wavelet", timings=timings)
    assert out.shape == lq.shape and 0 <= out.min() and out.max() <= 1
    assert set(timings) == {"encode", "unet", "decode", "color_fix"} and all(v >= 0 for v in timings.values())
    assert not sd_like.codec.use_tiling  # the VAE tiling used for this call was switched off again


# ------------------------------------------------------------------------------------------ colour fix
def test_wavelet_color_fix_removes_a_colour_cast_and_keeps_detail():
    g = torch.Generator().manual_seed(0)
    base = smooth_image(64, 64) * 0.8 + 0.1
    detail = torch.rand(1, 3, 64, 64, generator=g) * 0.1
    restored = (base + detail + torch.tensor([0.1, -0.05, 0.08])[None, :, None, None]).clamp(0, 1)
    fixed = wavelet_color_fix(restored, base)
    cast = lambda img: (img - base).mean(dim=(-2, -1)).abs().max()  # noqa: E731
    assert cast(fixed) < 0.02 < cast(restored)
    high_restored, _ = wavelet_decompose(restored)
    high_fixed, _ = wavelet_decompose(fixed)
    assert torch.corrcoef(torch.stack([high_fixed.flatten(), high_restored.flatten()]))[0, 1] > 0.9


def test_adain_color_fix_matches_channel_statistics():
    g = torch.Generator().manual_seed(1)
    style = torch.rand(1, 3, 32, 32, generator=g) * 0.5 + 0.2
    content = torch.rand(1, 3, 32, 32, generator=g)
    fixed = adain_color_fix(content, style)
    assert torch.allclose(fixed.mean(dim=(-2, -1)), style.mean(dim=(-2, -1)), atol=1e-3)
    assert torch.allclose(fixed.std(dim=(-2, -1)), style.std(dim=(-2, -1)), atol=1e-3)


# ------------------------------------------------------------------------------------------ adapters
def test_small_adapter_round_trip_rebuilds_an_identical_model(small, tmp_path):
    path = small.save_adapter(tmp_path / "small.safetensors")
    rebuilt = restorer_from_adapter(path).eval()
    lq = torch.rand(1, 3, 40, 40)
    assert torch.equal(small.restore(lq, small.tokens_from_features(features())),
                       rebuilt.restore(lq, rebuilt.tokens_from_features(features())))
    other = small_restorer(seed=5)
    other.load_adapter(path)  # same architecture, other weights: becomes identical
    assert torch.equal(small.restore(lq, None), other.restore(lq, None))
    assert rebuilt.cfg_scale == small.cfg_scale and rebuilt.prediction_type == "residual"


def test_sd_adapter_round_trip_with_lora_and_conv_in(sd_like, tmp_path):
    with torch.no_grad():
        sd_like.unet.conv_in.weight.add_(0.01)
    path = sd_like.save_adapter(tmp_path / "sd.safetensors")
    fresh = sd_like_restorer(seed=0)  # same base weights, zero LoRA, other MapNet init
    lq = torch.rand(1, 3, 32, 32)
    tokens = sd_like.tokens_from_features(features())
    assert not torch.allclose(fresh.restore(lq, tokens), sd_like.restore(lq, tokens))
    fresh.load_adapter(path)
    assert torch.equal(fresh.restore(lq, tokens), sd_like.restore(lq, tokens))
    assert torch.equal(fresh.tokens_from_features(features()), tokens)


def test_mismatched_adapters_raise_architecture_mismatch(small, sd_like, tmp_path):
    path = small.save_adapter(tmp_path / "small.safetensors")
    with pytest.raises(ArchitectureMismatchError, match="token_dim"):
        small_restorer(token_dim=48).load_adapter(path)
    with pytest.raises(ArchitectureMismatchError, match="backend"):
        sd_like.load_adapter(path)
    sd_path = sd_like.save_adapter(tmp_path / "sd.safetensors")
    with pytest.raises(ArchitectureMismatchError, match="unet_lora"):
        sd_like_restorer(unet_lora_rank=8).load_adapter(sd_path)
    with pytest.raises(WeightsNotFoundError, match="SD-Turbo checkpoint"):
        restorer_from_adapter(sd_path)
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ArchitectureMismatchError, match="not a Face2Scene restorer adapter"):
        small.load_adapter(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ArchitectureMismatchError, match="not a readable safetensors"):
        small.load_adapter(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsNotFoundError, match="not found"):
        small.load_adapter(tmp_path / "missing.safetensors")


def test_an_embedded_adapter_with_an_sd_turbo_checkpoint_is_refused(small, tmp_path):
    from face2scene_core.restorer.loading import load_sd_turbo_restorer

    path = small.save_adapter(tmp_path / "small.safetensors")
    # refused from the adapter's metadata, before the (here absent) checkpoint is opened
    with pytest.raises(ArchitectureMismatchError, match="embedded model, not SD-Turbo"):
        restorer_from_adapter(path, sd_turbo=tmp_path / "sd_turbo.safetensors")
    with pytest.raises(ArchitectureMismatchError, match="embedded model, not SD-Turbo"):
        load_sd_turbo_restorer(tmp_path / "sd_turbo.safetensors", path)


def test_adapter_holds_only_the_trained_parts(sd_like, tmp_path):
    from safetensors import safe_open

    path = sd_like.save_adapter(tmp_path / "sd.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        keys, meta = list(fh.keys()), fh.metadata()
    groups = {k.split(".")[0] for k in keys}
    assert groups == {"mapnet", "unet_lora", "vae_lora", "unet"}
    assert {k for k in keys if k.startswith("unet.")} == {"unet.conv_in.weight", "unet.conv_in.bias"}
    spec = json.loads(meta["spec"])
    assert spec["unet_lora"]["rank"] == 32 and spec["vae_lora"]["rank"] == 16 and spec["unet_lora"]["alpha"] == 8
    assert spec["token_dim"] == TOKEN_DIM and spec["prediction_type"] == "epsilon"


# ------------------------------------------------------------------------------------------ LoRA
def test_lora_trains_only_lora_conv_in_and_mapnet():
    r = sd_like_restorer()
    named = dict(r.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    lora = {n for n in named if "lora_" in n}
    expected = lora | {"unet.conv_in.weight", "unet.conv_in.bias"} | {f"mapnet.{n}" for n, _ in r.mapnet.named_parameters()}
    assert trainable == expected
    assert any(n.startswith("codec.encoder.") for n in lora) and not any(n.startswith("codec.decoder.") for n in lora)
    assert any(".attn2.to_k.lora_A" in n for n in lora) and any(".ff.net.2.lora_B" in n for n in lora)
    assert not any(n.startswith("unet.conv_in.lora") for n in lora)
    ranks = {p.shape[0] for n, p in named.items() if n.startswith("unet.") and "lora_A" in n}
    assert ranks == {32}
    # one optimiser step moves LoRA weights and leaves the base weights untouched
    base = {n: p.detach().clone() for n, p in named.items() if not p.requires_grad}
    opt = torch.optim.SGD(r.trainable_parameters(), lr=1e-2)
    r.train()
    r(torch.rand(1, 3, 32, 32), r.tokens_from_features(features()), cfg_scale=1.0).mean().backward()
    opt.step()
    assert all(torch.equal(p, base[n]) for n, p in r.named_parameters() if n in base)
    assert any(named[n].abs().sum() > 0 for n in lora if "lora_B" in n)


def test_small_model_trains_the_whole_unet_and_prompts(small):
    trainable = {n for n, p in small.named_parameters() if p.requires_grad}
    assert {n for n, _ in small.named_parameters() if n.startswith("unet.")} <= trainable
    assert "prompt_embeds" in trainable and not any("lora_" in n for n in trainable)
    assert len(list(small.codec.parameters())) == 0


# ------------------------------------------------------------------------------------------ SD loading
def _unet_to_ldm(unet) -> dict:
    """diffusers UNet state dict -> original LDM/stability layout (model.diffusion_model.*)."""
    cfg, lpb = unet.config, unet.config.layers_per_block
    m = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
         "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
         "mid_block.attentions.0.": "middle_block.1."}
    for i in range(len(cfg.block_out_channels)):
        for j in range(lpb):
            m[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{i * (lpb + 1) + j + 1}.0."
            m[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{i * (lpb + 1) + j + 1}.1."
        m[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (lpb + 1)}.0.op."
        for j in range(lpb + 1):
            m[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{i * (lpb + 1) + j}.0."
            m[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{i * (lpb + 1) + j}.1."
        upsampler_slot = 2 if "CrossAttn" in cfg.up_block_types[i] else 1
        m[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{i * (lpb + 1) + lpb}.{upsampler_slot}."
    for j in range(2):
        m[f"mid_block.resnets.{j}."] = f"middle_block.{2 * j}."
    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
              "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
    out = {}
    for k, v in unet.state_dict().items():
        prefix = max((p for p in m if k.startswith(p)), key=len)
        rest = k[len(prefix):]
        if ".resnets." in prefix:
            head, _, tail = rest.partition(".")
            rest = f"{resnet.get(head, head)}.{tail}"
        out[f"model.diffusion_model.{m[prefix]}{rest}"] = v.contiguous()
    return out


def _vae_to_ldm(vae) -> dict:
    n, lpb = len(vae.config.block_out_channels), vae.config.layers_per_block
    m = {"encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out.",
         "encoder.mid_block.attentions.0.": "encoder.mid.attn_1.", "decoder.mid_block.attentions.0.": "decoder.mid.attn_1."}
    for i in range(n):
        for j in range(lpb):
            m[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
        m[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        for j in range(lpb + 1):
            m[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{n - 1 - i}.block.{j}."
        m[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{n - 1 - i}.upsample."
    for part in ("encoder", "decoder"):
        for j in range(2):
            m[f"{part}.mid_block.resnets.{j}."] = f"{part}.mid.block_{j + 1}."
    attn = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    out = {}
    for k, v in vae.state_dict().items():
        prefixes = [p for p in m if k.startswith(p)]
        if prefixes:
            prefix = max(prefixes, key=len)
            rest = k[len(prefix):]
            if "attentions" in prefix:
                rest = next((new + rest[len(old):] for old, new in attn.items() if rest.startswith(old)), rest)
                v = v[:, :, None, None] if v.ndim == 2 else v  # LDM uses 1x1 convs
            else:
                rest = rest.replace("conv_shortcut.", "nin_shortcut.")
            k = m[prefix] + rest
        out[f"first_stage_model.{k}"] = v.contiguous()
    return out


def _text_to_open_clip(te, prefix: str, extra_layers: int = 1) -> dict:
    """CLIPTextModel -> OpenCLIP layout, with `extra_layers` more blocks (SD 2.x uses the penultimate one)."""
    sd = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in te.state_dict().items()}
    out = {f"{prefix}token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
           f"{prefix}positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
           f"{prefix}ln_final.weight": sd["text_model.final_layer_norm.weight"],
           f"{prefix}ln_final.bias": sd["text_model.final_layer_norm.bias"]}
    n = te.config.num_hidden_layers
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i in range(n + extra_layers):
        src, dst = f"text_model.encoder.layers.{min(i, n - 1)}.", f"{prefix}transformer.resblocks.{i}."
        for old, new in names.items():
            for w in ("weight", "bias"):
                out[f"{dst}{new}.{w}"] = sd[f"{src}{old}.{w}"] * (1.0 if i < n else -3.0)
        for w in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{w}"] = torch.cat([sd[f"{src}self_attn.{q}_proj.{w}"] for q in "qkv"])
    return {k: v.contiguous().clone() for k, v in out.items()}


@pytest.mark.parametrize("text_prefix", ["cond_stage_model.model.", "conditioner.embedders.0.model."])
def test_single_file_checkpoint_in_original_layout_loads_exactly(tmp_path, text_prefix):
    src = st.build_tiny_sd_like(tmp_path / "configs", cross_attention_dim=TOKEN_DIM, seed=3)
    ckpt = {**_unet_to_ldm(src.unet), **_vae_to_ldm(src.vae), **_text_to_open_clip(src.text_encoder, text_prefix)}
    save_file(ckpt, tmp_path / "tiny_sd.safetensors")
    loaded = st.load_sd_components(tmp_path / "tiny_sd.safetensors", config_dir=tmp_path / "configs")
    for a, b in [(src.unet, loaded.unet), (src.vae, loaded.vae), (src.text_encoder, loaded.text_encoder)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    restorer = st.load_sd_turbo(tmp_path / "tiny_sd.safetensors", config_dir=tmp_path / "configs")
    expected = st.encode_prompts(src.text_encoder, [st.POSITIVE_PROMPT, st.NEGATIVE_PROMPT])
    assert torch.allclose(restorer.prompt_embeds, expected, atol=1e-6)  # penultimate layer, not the extra one
    assert restorer.prompt_embeds.shape == (2, 77, TOKEN_DIM) and not restorer.prompt_embeds.requires_grad
    out = restorer.restore(torch.rand(1, 3, 24, 40))
    assert out.shape == (1, 3, 24, 40)


def test_diffusers_folder_loads_and_matches(tmp_path):
    src = st.build_tiny_sd_like(tmp_path / "configs", cross_attention_dim=TOKEN_DIM, seed=4)
    src.save_pretrained(tmp_path / "folder")
    loaded = st.load_sd_components(tmp_path / "folder", config_dir=tmp_path / "configs")
    assert all(torch.equal(v, loaded.unet.state_dict()[k]) for k, v in src.unet.state_dict().items())
    assert isinstance(loaded.vae, VAECodec)
    (tmp_path / "folder" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError, match="no safetensors weights"):
        st.load_sd_components(tmp_path / "folder", config_dir=tmp_path / "configs")


def _fake_checkpoint(path, tensors: dict) -> None:
    save_file({k: torch.zeros(shape, dtype=torch.float16) for k, shape in tensors.items()}, path)


def test_sd15_like_checkpoint_raises_architecture_mismatch(tmp_path):
    _fake_checkpoint(tmp_path / "sd15.safetensors", {
        "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
    })
    with pytest.raises(ArchitectureMismatchError, match=r"SD 1\.x.*cross-attention 768.*width is 768, not 1024"):
        st.load_sd_turbo(tmp_path / "sd15.safetensors")


@pytest.mark.parametrize("tensors, message", [
    ({"model.diffusion_model.label_emb.0.0.weight": (1280, 2816), "conditioner.embedders.1.model.positional_embedding": (77, 1280)}, "SDXL"),
    ({"encoder.layer.0.weight": (4, 4), "head.bias": (4,)}, "not a Stable Diffusion checkpoint"),
    ({"down_blocks.0.resnets.0.conv1.weight": (32, 32, 3, 3)}, "diffusers-format"),
])
def test_other_checkpoints_raise_architecture_mismatch(tmp_path, tensors, message):
    _fake_checkpoint(tmp_path / "other.safetensors", tensors)
    with pytest.raises(ArchitectureMismatchError, match=message):
        st.load_sd_turbo(tmp_path / "other.safetensors")


def test_missing_or_unreadable_checkpoint(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"missing\.safetensors.*single-file checkpoint"):
        st.load_sd_turbo(tmp_path / "missing.safetensors")
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ArchitectureMismatchError, match="pickles are not loaded"):
        st.load_sd_turbo(tmp_path / "model.ckpt")


def test_bundled_configs_are_sd21():
    cfg = st.load_configs()
    assert cfg["unet"]["cross_attention_dim"] == 1024 and cfg["unet"]["block_out_channels"] == [320, 640, 1280, 1280]
    assert cfg["vae"]["latent_channels"] == 4 and cfg["vae"]["scaling_factor"] == 0.18215
    assert cfg["text_encoder"]["hidden_size"] == 1024 and cfg["text_encoder"]["num_hidden_layers"] == 23
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(cfg["unet"])
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724  # SD 2.1 UNet


def test_the_restorer_package_imports_form_no_cycle():
    """adapter / model / sd_turbo / film_net never import each other in a circle (function-level imports count):
    only restorer.loading knows every backend."""
    import ast

    import face2scene_core.restorer as pkg

    root = Path(pkg.__file__).parent
    graph = {}
    for f in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                deps |= {n.split(".")[0] for n in names if (root / f"{n.split('.')[0]}.py").is_file()}
        graph[f.stem] = deps - {f.stem}

    def cycle_from(start, node, seen):
        for dep in graph.get(node, ()):
            if dep == start:
                return [node, dep]
            if dep not in seen:
                seen.add(dep)
                found = cycle_from(start, dep, seen)
                if found:
                    return [node, *found]
        return None

    cycles = {m: cycle_from(m, m, set()) for m in graph}
    assert not any(cycles.values()), {m: c for m, c in cycles.items() if c}
    assert {"model", "sd_turbo", "adapter", "film_net"} <= graph["loading"]

