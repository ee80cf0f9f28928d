"""The v2 embedded restorer network: a convolutional U-Net whose every block is modulated by the degradation code.

It takes the place of the small ``UNet2DConditionModel`` inside :class:`~.model.OneStepRestorer` (same call,
``net(z, t, encoder_hidden_states=context).sample``), so the one-step contract, CFG, tiling and adapters are
unchanged; only the network differs:

- **Conditioning** (FiLM, not cross-attention): ``context = [prompt tokens ; 21 degradation tokens]`` is pooled
  by ``pool_queries`` learned attention queries into one vector ``c``; every residual block scales and shifts
  its features by ``Linear(c)`` (initialised to the identity), and the whole residual is multiplied by a
  per-channel gate ``g(c)`` in [0, 2]. The code can therefore turn the correction up, change its kind, or switch
  it off (a clean photo), everywhere in the photo at once.
- **Backbone**: dense 3x3 convolutions and ReLU only (the fastest operators on a CPU, channels-last oneDNN),
  a stride-2 convolution down and a 1x1 convolution + pixel shuffle up per level, skip connections by addition,
  no attention over pixels: the cost per megapixel is flat at any photo size and tiles need little overlap.
- **Identity at initialisation**: the output convolution is zero, so an untrained net returns its input
  (the restorer predicts a residual).

Widths ``(32, 64, 128, 256)`` with ``(1, 2, 2, 2)`` blocks on a x2 pixel-unshuffle latent: ~124 GFLOP per
megapixel by `flops_per_pixel` (the same at every level: widths double as the area quarters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


@dataclass
class NetOutput:
    """What the restorer reads: ``.sample`` (like diffusers' ``UNet2DConditionOutput``)."""

    sample: torch.Tensor


class FiLMResBlock(nn.Module):
    """``x + conv(relu(film(conv(x))))``; FiLM = per-channel ``(1 + scale, shift)`` from the code vector."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond)[:, :, None, None].to(x.dtype).chunk(2, dim=1)
        h = self.conv1(x)
        h = F.relu(torch.addcmul(shift, h, 1.0 + scale))
        return x + self.conv2(h)


class TokenPool(nn.Module):
    """Learned attention pooling of the context tokens ``(B, L, D)`` into one code vector ``(B, cond_dim)``."""

    def __init__(self, token_dim: int, cond_dim: int, queries: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, token_dim) * token_dim**-0.5)
        self.key = nn.Linear(token_dim, token_dim)
        self.value = nn.Linear(token_dim, token_dim)
        self.norm = nn.LayerNorm(token_dim)
        self.mlp = nn.Sequential(nn.Linear(queries * token_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        ctx = self.norm(context.to(self.norm.weight.dtype))
        k, v = self.key(ctx), self.value(ctx)  # b, l, d
        attn = torch.einsum("qd,bld->bql", self.queries.to(k.dtype), k) * k.shape[-1] ** -0.5
        pooled = torch.einsum("bql,bld->bqd", attn.softmax(dim=-1), v)  # b, q, d
        return self.mlp(pooled.flatten(1))


class FiLMUNet(ModelMixin, ConfigMixin):
    """Convolutional U-Net with FiLM conditioning from context tokens (see the module docstring).

    Args:
        in_channels / out_channels: latent channels (12 for a x2 pixel-unshuffle).
        block_out_channels: width per level; each level after the first halves the resolution.
        layers_per_block: residual blocks per level, on the way down and again on the way up (int or one per level).
        cross_attention_dim: width ``D`` of the context tokens (the name the restorer reads).
        cond_dim: width of the pooled code vector.
        pool_queries: attention queries of the token pooling.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 12,
        out_channels: int = 12,
        block_out_channels: tuple[int, ...] = (32, 64, 128, 256),
        layers_per_block: int | tuple[int, ...] = (1, 2, 2, 2),
        cross_attention_dim: int = 256,
        cond_dim: int = 256,
        pool_queries: int = 4,
    ) -> None:
        super().__init__()
        widths = list(block_out_channels)
        n = len(widths)
        layers = [layers_per_block] * n if isinstance(layers_per_block, int) else list(layers_per_block)
        if n < 2 or len(layers) != n or min(layers) < 1:
            raise ValueError(f"need >= 2 levels and >= 1 block per level, got {block_out_channels}, {layers_per_block}")
        self.pool = TokenPool(cross_attention_dim, cond_dim, pool_queries)
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            nn.ModuleList(FiLMResBlock(w, cond_dim) for _ in range(k)) for w, k in zip(widths, layers))
        self.downsamplers = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.upsamplers = nn.ModuleList(nn.Conv2d(b, 4 * a, 1) for a, b in zip(widths, widths[1:]))
        self.up_blocks = nn.ModuleList(
            nn.ModuleList(FiLMResBlock(w, cond_dim) for _ in range(k)) for w, k in zip(widths[:-1], layers[:-1]))
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        self.gate = nn.Linear(cond_dim, out_channels)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, sample: torch.Tensor, timestep=None, encoder_hidden_states: torch.Tensor | None = None,
                return_dict: bool = True):
        """``sample (B, C, h, w)`` (sides multiples of ``2 ** (levels - 1)``), ``encoder_hidden_states (B, L, D)``
        -> ``NetOutput(sample=(B, C, h, w))``; ``timestep`` is accepted and unused (one fixed step)."""
        if encoder_hidden_states is None:
            raise ValueError("FiLMUNet needs encoder_hidden_states (the prompt tokens at least)")
        cond = self.pool(encoder_hidden_states).to(sample.dtype)
        h = self.conv_in(sample)
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, cond)
            if level < len(self.downsamplers):
                skips.append(h)
                h = self.downsamplers[level](h)
        for level in reversed(range(len(self.up_blocks))):
            h = F.pixel_shuffle(self.upsamplers[level](h), 2) + skips[level]
            for block in self.up_blocks[level]:
                h = block(h, cond)
        gate = 2.0 * torch.sigmoid(self.gate(cond))[:, :, None, None].to(h.dtype)  # 1.0 at initialisation
        out = self.conv_out(h) * gate
        return NetOutput(sample=out) if return_dict else (out,)


def flops_per_pixel(net: FiLMUNet, in_channels_per_pixel: int = 3, downscale: int = 2) -> float:
    """Multiply-adds x 2 of the convolutions per *image* pixel (the latent is ``downscale`` x smaller per side)."""
    total, area = 0.0, 1.0 / downscale**2

    def conv(c_in: int, c_out: int, k: int, a: float) -> float:
        return 2.0 * c_in * c_out * k * k * a

    widths = list(net.config.block_out_channels)
    total += conv(net.config.in_channels, widths[0], 3, area)
    for level, blocks in enumerate(net.down_blocks):
        a = area / 4**level
        total += len(blocks) * 2 * conv(widths[level], widths[level], 3, a)
        if level < len(widths) - 1:
            total += conv(widths[level], widths[level + 1], 3, a / 4)
            total += conv(widths[level + 1], 4 * widths[level], 1, a / 4)
            total += len(net.up_blocks[level]) * 2 * conv(widths[level], widths[level], 3, a)
    total += conv(widths[0], net.config.out_channels, 3, area)
    return total


__all__ = ["FiLMUNet", "FiLMResBlock", "TokenPool", "NetOutput", "flops_per_pixel"]
