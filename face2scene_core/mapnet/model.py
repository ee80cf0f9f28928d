"""MapNet: FaDeX degradation features -> 21 degradation tokens for the restorer's cross-attention.

Data flow (paper, Stage II; values in ``/work/shared/DESIGN.md``)::

    features (B, C, h, w)                       FaDeX output, stride 4 (a 32 px face -> 8x8)
      -> overlap patch embed: Conv k3 s2 p1, LayerNorm      (B, n, 2C),  n = ceil(h/2) * ceil(w/2)
      -> (average-pooled to at most 64x64 cells for very large faces)
      -> split channels into two branches of C
      -> differential attention, 8 heads (4 per branch):
             A1 = softmax(Q1 K1^T / sqrt(d)),  A2 = softmax(Q2 K2^T / sqrt(d))
             V from the concatenation of both branches
             out = (A1 - lambda * A2) V,  lambda a learnable scalar
      -> RMSNorm (per head) -> Linear back to C -> + residual (input pooled to the same grid)
      -> adaptive average pooling on 1x1, 2x2, 4x4 grids: 21 cells    (B, 21, C)
      -> + learned cell embedding -> MLP -> LayerNorm                   (B, 21, token_dim)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

#: Smallest feature map MapNet accepts: a 7x7 map becomes 4x4 after the stride-2 embed, enough for
#: the finest (4x4) token grid. FaDeX has stride 4, so this is a face crop of about 28-32 px.
MIN_FEATURE_SIZE = 7


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last axis with a learnable gain (``torch.nn.RMSNorm`` is torch >= 2.4)."""

    def __init__(self, dim: int, *, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.float().pow(2).mean(dim=-1, keepdim=True).add(self.eps).rsqrt()
        return (x.float() * rms).to(x.dtype) * self.weight


class DifferentialAttention(nn.Module):
    """Two-branch differential self-attention over ``(B, n, 2C)`` tokens, output ``(B, n, C)``.

    Branch 1 (first C channels) gives queries/keys of map A1, branch 2 (last C channels) those of A2;
    each branch has ``heads`` heads of width ``C / heads``. Values come from both branches (2C channels,
    ``heads`` heads of width ``2C / heads``). ``out = (A1 - lambda * A2) V``, RMS-normalised per head,
    scaled by ``1 - lambda_init`` (as in the DIFF Transformer) and projected back to C channels.
    """

    def __init__(self, *, dim: int, heads: int, lambda_init: float):
        super().__init__()
        assert dim % heads == 0, f"branch width {dim} must be divisible by heads {heads}"
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.lambda_init = lambda_init
        self.to_qk1 = nn.Linear(dim, 2 * dim, bias=False)
        self.to_qk2 = nn.Linear(dim, 2 * dim, bias=False)
        self.to_v = nn.Linear(2 * dim, 2 * dim, bias=False)
        self.lambda_ = nn.Parameter(torch.tensor(float(lambda_init)))
        self.norm = RMSNorm(2 * dim // heads)
        self.to_out = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)  # b, n, c  (each)
        q1, k1 = rearrange(self.to_qk1(x1), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        q2, k2 = rearrange(self.to_qk2(x2), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        v = rearrange(self.to_v(x), "b n (h e) -> b h n e", h=self.heads)  # e = 2c / heads
        # (A1 - lambda A2) V == A1 V - lambda (A2 V): two fused attention calls, no n x n map kept in memory
        o1 = F.scaled_dot_product_attention(q1, k1, v, scale=self.scale)  # b, h, n, e
        o2 = F.scaled_dot_product_attention(q2, k2, v, scale=self.scale)
        out = o1 - self.lambda_ * o2
        out = self.norm(out) * (1.0 - self.lambda_init)
        return self.to_out(rearrange(out, "b h n e -> b n (h e)"))  # b, n, c


class MapNet(ModelMixin, ConfigMixin):
    r"""Maps FaDeX degradation features to 21 cross-attention tokens (1 + 4 + 16 grid cells).

    Parameters:
        in_channels (`int`, defaults to 256): channels ``C`` of the FaDeX features
            (``FaDeX.feature_channels``).
        token_dim (`int`, defaults to 1024): width of each token; must equal the restorer UNet's
            ``cross_attention_dim`` (1024 for SD-Turbo, smaller for the embedded CPU model).
        num_heads (`int`, defaults to 8): attention heads in total, half per branch (paper: 8, so 4
            differential heads). Even, and ``in_channels`` divisible by ``num_heads // 2``.
        lambda_init (`float`, defaults to 0.8): initial value of the learnable scalar lambda.
        mlp_hidden (`int`, defaults to 1024): hidden width of the per-cell token MLP.
        grid_sizes (`tuple[int, ...]`, defaults to `(1, 2, 4)`): pooling grids; the token count is
            ``sum(g * g)`` (21 by default). Tokens are ordered grid by grid, each row-major.
        cell_embedding (`bool`, defaults to `True`): add a learned vector per grid cell before the MLP,
            so the UNet's (position-free) cross-attention can tell the cells apart.
        max_attention_side (`int`, defaults to 64): the embedded map is average-pooled to at most this
            many cells per side before attention (bounds cost for very large faces: at most 4096 tokens).

    ``forward(features)``: ``features`` float ``(B, in_channels, h, w)`` with ``h, w >= 7``
    (:data:`MIN_FEATURE_SIZE`) -> tokens float ``(B, num_tokens, token_dim)``, each token
    LayerNorm-ed. Smaller maps raise ``ValueError`` (the pipeline reports ``FaceTooSmallError``).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 256,
        token_dim: int = 1024,
        num_heads: int = 8,
        lambda_init: float = 0.8,
        mlp_hidden: int = 1024,
        grid_sizes: tuple[int, ...] = (1, 2, 4),
        cell_embedding: bool = True,
        max_attention_side: int = 64,
    ):
        super().__init__()
        grid_sizes = tuple(int(g) for g in grid_sizes)
        if in_channels <= 0:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if token_dim <= 0 or mlp_hidden <= 0:
            raise ValueError(f"token_dim and mlp_hidden must be positive, got {token_dim}, {mlp_hidden}")
        if num_heads < 2 or num_heads % 2:
            raise ValueError(f"num_heads must be an even number >= 2 (two branches), got {num_heads}")
        if in_channels % (num_heads // 2):
            raise ValueError(
                f"in_channels ({in_channels}) must be divisible by the heads per branch ({num_heads // 2})"
            )
        if not 0.0 <= lambda_init < 1.0:
            raise ValueError(f"lambda_init must be in [0, 1), got {lambda_init}")
        if not grid_sizes or any(g < 1 for g in grid_sizes):
            raise ValueError(f"grid_sizes must be positive integers, got {grid_sizes}")
        if max_attention_side < max(grid_sizes):
            raise ValueError(
                f"max_attention_side ({max_attention_side}) must be >= the finest grid ({max(grid_sizes)})"
            )

        self.embed = nn.Conv2d(in_channels, 2 * in_channels, kernel_size=3, stride=2, padding=1)
        self.embed_norm = nn.LayerNorm(2 * in_channels)
        self.attn = DifferentialAttention(dim=in_channels, heads=num_heads // 2, lambda_init=lambda_init)
        num_tokens = sum(g * g for g in grid_sizes)
        self.cell_embed = nn.Parameter(torch.randn(num_tokens, in_channels) * 0.02) if cell_embedding else None
        self.token_mlp = nn.Sequential(
            nn.Linear(in_channels, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, token_dim)
        )
        self.token_norm = nn.LayerNorm(token_dim)

    @property
    def num_tokens(self) -> int:
        """Tokens per image: ``sum(g * g for g in grid_sizes)`` (21 by default)."""
        return sum(g * g for g in self.config.grid_sizes)

    @property
    def min_feature_size(self) -> int:
        """Smallest accepted feature height/width: the stride-2 embed must leave the finest grid's size."""
        return max(MIN_FEATURE_SIZE, 2 * max(self.config.grid_sizes) - 1)

    def check_features(self, features: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem if ``features`` cannot be tokenised."""
        if not isinstance(features, torch.Tensor) or features.ndim != 4:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"MapNet expects features of shape (B, C, h, w), got {shape}")
        if features.shape[1] != self.config.in_channels:
            raise ValueError(
                f"MapNet was built for {self.config.in_channels}-channel FaDeX features, got {features.shape[1]}"
            )
        h, w = features.shape[-2:]
        m = self.min_feature_size
        if h < m or w < m:
            raise ValueError(
                f"degradation features of {h}x{w} are too small for MapNet (need at least {m}x{m}, i.e. a face "
                f"crop of about {4 * m} px or more at native resolution); use a photo where the face is larger"
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self.check_features(features)
        x = self.embed(features)  # b, 2c, h2, w2
        side = self.config.max_attention_side
        if max(x.shape[-2:]) > side:
            x = F.adaptive_avg_pool2d(x, (min(x.shape[-2], side), min(x.shape[-1], side)))
        h2, w2 = x.shape[-2:]
        x = self.embed_norm(rearrange(x, "b c h w -> b (h w) c"))  # b, n, 2c
        x = self.attn(x)  # b, n, c
        shortcut = F.adaptive_avg_pool2d(features, (h2, w2))  # b, c, h2, w2
        x = rearrange(x, "b (h w) c -> b c h w", h=h2, w=w2) + shortcut
        cells = torch.cat(
            [rearrange(F.adaptive_avg_pool2d(x, g), "b c gh gw -> b (gh gw) c") for g in self.config.grid_sizes],
            dim=1,
        )  # b, 21, c
        if self.cell_embed is not None:
            cells = cells + self.cell_embed
        return self.token_norm(self.token_mlp(cells))  # b, 21, token_dim


__all__ = ["MapNet", "DifferentialAttention", "RMSNorm", "MIN_FEATURE_SIZE"]
