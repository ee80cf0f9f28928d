"""The one-step restorer: LQ image -> latent -> one UNet step at t = 999 -> x0 -> decoded image.

Two backends share this class:

- **SD-Turbo** (paper): :class:`~.codecs.VAECodec` + SD 2.1 UNet, LoRA r16 on the VAE encoder and r32 on
  the UNet (``unet.conv_in`` in full), prompt embeddings computed once from the text encoder and cached
  as buffers ``(2, 77, 1024)``, ``prediction_type="epsilon"``. Built by :mod:`.sd_turbo`.
- **small** (embedded CPU default): :class:`~.codecs.PixelUnshuffleCodec` (48 channels at 1/4 size),
  a small UNet trained in full, *learned* prompt embeddings ``(2, n, token_dim)``,
  ``prediction_type="residual"`` (x0 = x_t + out). Built by :meth:`OneStepRestorer.small`.

Context of the UNet's cross-attention: ``[prompt tokens ; 21 degradation tokens]`` (98 tokens for
SD-Turbo); ``tokens=None`` is the no-token ablation (prompt tokens only). Classifier-free guidance runs
the positive and negative prompts as one batch of 2B: ``out = neg + s * (pos - neg)`` on the UNet
output; both halves get the same degradation tokens. ``s == 1`` skips the negative half.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import nn

from ..errors import FaceTooSmallError
from .codecs import PixelUnshuffleCodec, VAECodec
from .colorfix import COLOR_FIXES, apply_color_fix
from .lora import UNET_LORA_TARGETS, VAE_LORA_TARGETS, add_lora, lora_spec
from .tiling import tiled_apply

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
SD_TURBO_CONFIG_DIR = CONFIG_DIR / "sd_turbo"

POSITIVE_PROMPT = "a high-resolution, 8K, ultra-realistic sharp image, vibrant colors, and natural lighting"
NEGATIVE_PROMPT = (
    "oil painting, cartoon, blur, dirty, messy, low quality, deformation, low resolution, oversmooth"
)
DEFAULT_CFG_SCALE = 1.07
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "residual")


def load_scheduler_config() -> dict:
    """SD-Turbo's bundled scheduler config (``scaled_linear`` betas 0.00085..0.012, 1000 steps)."""
    return json.loads((SD_TURBO_CONFIG_DIR / "scheduler" / "scheduler_config.json").read_text())


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` at the bottom/right to multiples of ``multiple`` (reflect, or replicate when tiny)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class OneStepRestorer(nn.Module):
    """One-step diffusion restorer conditioned on degradation tokens.

    Args:
        unet (``UNet2DConditionModel``): ``in_channels == out_channels == codec.latent_channels``;
            its ``cross_attention_dim`` is the token width ``D``.
        codec (``VAECodec | PixelUnshuffleCodec``): image <-> latent.
        prompt_embeds (``Tensor (2, L, D)``): positive then negative prompt embeddings.
        mapnet (``MapNet | None``, default None): FaDeX features -> degradation tokens; ``token_dim == D``.
        learned_prompts (bool, default False): ``prompt_embeds`` is a trainable ``nn.Parameter``
            (small model, no text encoder) instead of a cached buffer.
        prediction_type (str, default "epsilon"): one of ``"epsilon"``, ``"v_prediction"``, ``"sample"``,
            ``"residual"`` (x0 = x_t + out).
        cfg_scale (float, default 1.07): default guidance scale ``s``.
        timestep (int, default 999): the single diffusion timestep; the LQ latent plays ``x_t``.
        scheduler_config (dict | None): ``DDPMScheduler`` config giving ``alphas_cumprod``
            (default: SD-Turbo's, bundled).
        unet_lora_rank (int | None, default None): add LoRA of this rank to the UNet (S3Diff targets)
            and train ``unet.conv_in`` in full; base weights frozen.
        vae_lora_rank (int | None, default None): add LoRA of this rank to the VAE encoder (VAE codec only).
        train_unet_fully (bool, default False): every UNet weight trainable (small model; excludes LoRA).
        backend (str, default "custom"): label stored in adapters: ``"sd_turbo"``, ``"small"`` or ``"custom"``.
        channels_last (bool, default True): keep the UNet's conv weights channels-last (about 2.5x faster
            convolutions on CPU with oneDNN; also the fast layout for cuDNN).

    Images are float tensors ``(B, 3, H, W)`` in ``[0, 1]``; any ``H, W`` (padded internally to
    :attr:`multiple` and cropped back). Tokens are ``(B or 1, N, D)``.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        codec: VAECodec | PixelUnshuffleCodec,
        prompt_embeds: torch.Tensor,
        *,
        mapnet: nn.Module | None = None,
        learned_prompts: bool = False,
        prediction_type: str = "epsilon",
        cfg_scale: float = DEFAULT_CFG_SCALE,
        timestep: int = 999,
        scheduler_config: dict | None = None,
        unet_lora_rank: int | None = None,
        vae_lora_rank: int | None = None,
        train_unet_fully: bool = False,
        backend: str = "custom",
        channels_last: bool = True,
    ):
        super().__init__()
        d = int(unet.config.cross_attention_dim)
        if unet.config.in_channels != codec.latent_channels or unet.config.out_channels != codec.latent_channels:
            raise ValueError(
                f"UNet in/out channels ({unet.config.in_channels}/{unet.config.out_channels}) must equal the "
                f"codec's latent channels ({codec.latent_channels})"
            )
        if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 2 or prompt_embeds.shape[2] != d:
            raise ValueError(f"prompt_embeds must be (2, L, {d}) (positive, negative), got {tuple(prompt_embeds.shape)}")
        if mapnet is not None and int(mapnet.config.token_dim) != d:
            raise ValueError(f"mapnet.token_dim ({mapnet.config.token_dim}) must equal the UNet cross_attention_dim ({d})")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if not cfg_scale > 0:
            raise ValueError(f"cfg_scale must be > 0, got {cfg_scale}")
        if train_unet_fully and unet_lora_rank:
            raise ValueError("train_unet_fully and unet_lora_rank are exclusive: a fully trained UNet needs no LoRA")
        if vae_lora_rank and not isinstance(codec, VAECodec):
            raise ValueError(f"vae_lora_rank={vae_lora_rank} needs a VAECodec, got {type(codec).__name__}")
        if backend not in ("sd_turbo", "small", "custom"):
            raise ValueError(f"backend must be 'sd_turbo', 'small' or 'custom', got {backend!r}")

        self.unet, self.codec, self.mapnet = unet, codec, mapnet
        self.prediction_type, self.cfg_scale, self.backend = prediction_type, float(cfg_scale), backend
        self.learned_prompts = bool(learned_prompts)
        if self.learned_prompts:
            self.prompt_embeds = nn.Parameter(prompt_embeds.detach().clone().float())
        else:
            self.register_buffer("prompt_embeds", prompt_embeds.detach().clone())

        scheduler = DDPMScheduler.from_config(scheduler_config or load_scheduler_config())
        if not 0 <= timestep < scheduler.config.num_train_timesteps:
            raise ValueError(f"timestep must be in [0, {scheduler.config.num_train_timesteps}), got {timestep}")
        self.timestep = int(timestep)
        self.scheduler_config = dict(scheduler.config)
        alpha_bar = float(scheduler.alphas_cumprod[self.timestep])
        self._sqrt_ab, self._sqrt_1mab = alpha_bar**0.5, (1.0 - alpha_bar) ** 0.5

        # trainability: base weights frozen; LoRA / conv_in / full UNet / MapNet / learned prompts train
        self.codec.requires_grad_(False)
        self.unet.requires_grad_(train_unet_fully)
        self.unet_lora = self.vae_lora = None
        if unet_lora_rank:
            add_lora(self.unet, unet_lora_rank, UNET_LORA_TARGETS)
            self.unet.conv_in.requires_grad_(True)
            self.unet_lora = lora_spec(unet_lora_rank, UNET_LORA_TARGETS)
        if vae_lora_rank:
            add_lora(self.codec, vae_lora_rank, VAE_LORA_TARGETS)
            self.vae_lora = lora_spec(vae_lora_rank, VAE_LORA_TARGETS)
        self.train_unet_fully = bool(train_unet_fully)
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ properties
    @property
    def token_dim(self) -> int:
        """Width ``D`` of prompt and degradation tokens (the UNet's cross-attention width)."""
        return int(self.unet.config.cross_attention_dim)

    @property
    def multiple(self) -> int:
        """Image sides are padded to multiples of this (codec downscale x UNet downsampling)."""
        return self.codec.downscale * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with ``requires_grad`` (LoRA, conv_in, MapNet, learned prompts, or the full small UNet)."""
        return [p for p in self.parameters() if p.requires_grad]

    def spec(self) -> dict:
        """JSON-serialisable architecture description (stored in adapter metadata, checked on load)."""
        def public(config) -> dict:
            return {k: v for k, v in dict(config).items() if not k.startswith("_")}

        spec = {
            "backend": self.backend,
            "prediction_type": self.prediction_type,
            "timestep": self.timestep,
            "cfg_scale": self.cfg_scale,
            "token_dim": self.token_dim,
            "codec": self.codec.spec(),
            "unet_lora": self.unet_lora,
            "vae_lora": self.vae_lora,
            "train_unet_fully": self.train_unet_fully,
            "learned_prompts": self.learned_prompts,
            "prompt_shape": list(self.prompt_embeds.shape),
            "mapnet": None if self.mapnet is None else public(self.mapnet.config),
            "net": type(self.unet).__name__,
            "unet_config": public(self.unet.config),
            "scheduler_config": public(self.scheduler_config),
        }
        return json.loads(json.dumps(spec, default=str))  # tuples -> lists, as read back from a file

    # ------------------------------------------------------------------ building blocks
    def tokens_from_features(self, features: torch.Tensor) -> torch.Tensor | None:
        """FaDeX features ``(B, C, h, w)`` -> degradation tokens ``(B, 21, D)`` (``None`` without a MapNet).

        Raises :class:`FaceTooSmallError` when the feature map is too small for the token grid.
        """
        if self.mapnet is None:
            log.warning("this restorer has no MapNet: restoring without degradation tokens")
            return None
        mapnet_dtype = next(self.mapnet.parameters()).dtype
        try:
            self.mapnet.check_features(features)
        except ValueError as exc:
            if "too small" in str(exc):
                raise FaceTooSmallError(str(exc)) from exc
            raise
        return self.mapnet(features.to(device=self.device, dtype=mapnet_dtype))

    def build_context(self, tokens: torch.Tensor | None, batch: int, which: int) -> torch.Tensor:
        """Cross-attention context ``(batch, L [+ N], D)``: prompt ``which`` (0 positive, 1 negative) + tokens."""
        prompt = self.prompt_embeds[which].to(self.dtype).expand(batch, -1, -1)  # b, L, d
        if tokens is None:
            return prompt
        return torch.cat([prompt, tokens.to(self.dtype).expand(batch, -1, -1)], dim=1)  # b, L + N, d

    def check_tokens(self, tokens: torch.Tensor | None, batch: int) -> None:
        if tokens is None:
            return
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or tokens.shape[-1] != self.token_dim:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be (B, N, {self.token_dim}), got {shape}")
        if tokens.shape[0] not in (1, batch):
            raise ValueError(f"tokens batch {tokens.shape[0]} must be 1 or match the image batch {batch}")

    def unet_output(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """One UNet call at :attr:`timestep`: ``z (B, c, h, w)``, ``context (B, L, D)`` -> ``(B, c, h, w)``."""
        t = torch.full((z.shape[0],), self.timestep, device=z.device, dtype=torch.long)
        return self.unet(z.to(self.dtype), t, encoder_hidden_states=context).sample

    def x0_from_output(self, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The clean latent from the UNet output, the LQ latent ``z`` playing ``x_t`` (DDPM step to t = -1)."""
        if self.prediction_type == "epsilon":
            return (z - self._sqrt_1mab * out) / self._sqrt_ab
        if self.prediction_type == "v_prediction":
            return self._sqrt_ab * z - self._sqrt_1mab * out
        if self.prediction_type == "sample":
            return out
        return z + out  # residual

    def denoise(
        self,
        z: torch.Tensor,
        tokens: torch.Tensor | None = None,
        cfg_scale: float | None = None,
        *,
        negative_only: bool = False,
    ) -> torch.Tensor:
        """LQ latent ``(B, c, h, w)`` -> float32 x0 latent, with CFG (positive and negative as one batch of 2B)."""
        b = z.shape[0]
        s = self.cfg_scale if cfg_scale is None else float(cfg_scale)
        if not s > 0:
            raise ValueError(f"cfg_scale must be > 0, got {s}")
        if negative_only:
            out = self.unet_output(z, self.build_context(tokens, b, 1))
        elif s == 1.0:
            out = self.unet_output(z, self.build_context(tokens, b, 0))
        else:
            context = torch.cat([self.build_context(tokens, b, 0), self.build_context(tokens, b, 1)])  # 2b, L, d
            pos, neg = self.unet_output(torch.cat([z, z]), context).chunk(2)
            out = neg + s * (pos - neg)
        return self.x0_from_output(z.float(), out.float())  # float32: keeps the LQ (identity) path exact

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[-1, 1]`` (sides multiples of :attr:`multiple`) -> latents (the lossless codec keeps ``x``'s dtype)."""
        if isinstance(self.codec, VAECodec):
            x = x.to(next(self.codec.parameters()).dtype)
        return self.codec.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images in ``[-1, 1]`` (not clamped)."""
        return self.codec.decode(z.to(next(self.codec.parameters()).dtype) if isinstance(self.codec, VAECodec) else z)

    def _check_images(self, lq: torch.Tensor) -> None:
        if not isinstance(lq, torch.Tensor) or lq.ndim != 4 or lq.shape[1] != 3:
            shape = tuple(lq.shape) if isinstance(lq, torch.Tensor) else type(lq).__name__
            raise ValueError(f"lq must be a tensor image (B, 3, H, W) in [0, 1], got {shape}")
        if not lq.is_floating_point():
            raise ValueError(f"lq must be a float tensor in [0, 1], got dtype {lq.dtype}")

    # ------------------------------------------------------------------ entry points
    def forward(
        self,
        lq: torch.Tensor,
        tokens: torch.Tensor | None = None,
        cfg_scale: float | None = None,
        *,
        negative_only: bool = False,
    ) -> torch.Tensor:
        """Differentiable restoration (training): ``lq (B, 3, H, W)`` in [0, 1] -> same shape in [0, 1].

        ``cfg_scale`` defaults to :attr:`cfg_scale` (training usually passes 1.0); ``negative_only`` runs
        only the negative prompt (online negative-prompt learning: its target is the LQ image).
        """
        self._check_images(lq)
        self.check_tokens(tokens, lq.shape[0])
        h, w = lq.shape[-2:]
        x = pad_to_multiple(lq * 2.0 - 1.0, self.multiple)
        x0 = self.denoise(self.encode(x), tokens, cfg_scale, negative_only=negative_only)
        y = self.decode(x0)[..., :h, :w]
        return ((y.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    @torch.no_grad()
    def restore(
        self,
        lq: torch.Tensor,
        tokens: torch.Tensor | None = None,
        *,
        cfg_scale: float | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        color_fix: str | None = None,
        timings: dict | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        """Inference: ``lq (B, 3, H, W)`` float in [0, 1] -> restored float32 ``(B, 3, H, W)`` in [0, 1].

        ``tile_size`` (pixels, rounded down to a multiple of :attr:`multiple`; ``None`` = whole image):
        the UNet runs on overlapping latent tiles blended with raised-cosine weights, and a VAE codec
        is tiled too. ``tile_overlap`` (pixels, default ``tile_size // 4``, at most half a tile).
        ``color_fix``: ``None``, ``"wavelet"`` or ``"adain"`` (towards ``lq``). ``timings``: a dict
        that gets seconds added under ``"encode"``, ``"unet"``, ``"decode"``, ``"color_fix"``.
        """
        # 1. check inputs
        self._check_images(lq)
        self.check_tokens(tokens, lq.shape[0])
        if color_fix is not None and color_fix not in COLOR_FIXES:
            raise ValueError(f"color_fix must be None or one of {COLOR_FIXES}, got {color_fix!r}")
        tile_lat = overlap_lat = None
        if tile_size is not None:
            if int(tile_size) < 2 * self.multiple:
                raise ValueError(f"tile_size must be >= {2 * self.multiple} px for this model, got {tile_size}")
            tile_px = int(tile_size) // self.multiple * self.multiple
            overlap_px = tile_px // 4 if tile_overlap is None else int(tile_overlap)
            if not 0 <= overlap_px <= tile_px // 2:
                raise ValueError(f"tile_overlap must be in [0, {tile_px // 2}] px for tile_size {tile_px}, got {overlap_px}")
            tile_lat, overlap_lat = tile_px // self.codec.downscale, overlap_px // self.codec.downscale
        times = timings if timings is not None else {}

        def tick(key: str, start: float) -> None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            times[key] = times.get(key, 0.0) + time.perf_counter() - start

        h, w = lq.shape[-2:]
        lq = lq.to(self.device)
        x = pad_to_multiple(lq.float() * 2.0 - 1.0, self.multiple)
        vae_tiling = isinstance(self.codec, VAECodec) and tile_size is not None
        previous = (self.codec.use_tiling, self.codec.tile_sample_min_size, self.codec.tile_latent_min_size,
                    self.codec.tile_overlap_factor) if vae_tiling else None
        try:
            if vae_tiling:
                self.codec.set_tiling(max(tile_lat * self.codec.downscale, 2 * self.codec.downscale))
            # 2. encode
            start = time.perf_counter()
            z = self.encode(x)
            tick("encode", start)
            # 3. one UNet step, tiled in latent space
            start = time.perf_counter()
            step = lambda zt: self.denoise(zt, tokens, cfg_scale)  # noqa: E731
            x0 = step(z) if tile_lat is None else tiled_apply(step, z, tile=tile_lat, overlap=overlap_lat,
                                                              progress=progress,
                                                              multiple=max(1, self.multiple // self.codec.downscale))
            tick("unet", start)
            # 4. decode, crop to the input size
            start = time.perf_counter()
            y = ((self.decode(x0)[..., :h, :w].float() + 1.0) / 2.0).clamp(0.0, 1.0)
            tick("decode", start)
        finally:
            if vae_tiling:
                (self.codec.use_tiling, self.codec.tile_sample_min_size, self.codec.tile_latent_min_size,
                 self.codec.tile_overlap_factor) = previous
        # 5. optional colour fix towards the input
        if color_fix is not None:
            start = time.perf_counter()
            y = apply_color_fix(y, lq.float(), color_fix)
            tick("color_fix", start)
        return y

    # ------------------------------------------------------------------ adapters and factories
    def save_adapter(self, path: str | Path) -> Path:
        """Save MapNet + LoRA + conv_in (+ learned prompts, + full small UNet) to one safetensors file."""
        from .adapter import save_adapter

        return save_adapter(self, path)

    def load_adapter(self, path: str | Path) -> None:
        """Load an adapter written by :meth:`save_adapter`; a file for another architecture raises
        :class:`~face2scene_core.errors.ArchitectureMismatchError`."""
        from .adapter import load_adapter

        load_adapter(self, path)

    @classmethod
    def small(
        cls,
        *,
        feature_channels: int | None = 256,
        token_dim: int = 256,
        block_out_channels: tuple[int, ...] = (64, 128, 256),
        layers_per_block: int = 1,
        attention_heads: int = 8,
        self_attention: tuple[bool, ...] = (False, False, True),
        factor: int = 4,
        n_prompt_tokens: int = 4,
        mapnet_kwargs: dict | None = None,
        cfg_scale: float = 1.0,
        identity_init: bool = True,
        seed: int = 0,
        net: str = "unet",
        cond_dim: int = 256,
        pool_queries: int = 4,
    ) -> OneStepRestorer:
        """The embedded CPU model: small UNet on :class:`PixelUnshuffleCodec`, learned prompts, residual.

        Args:
            feature_channels: FaDeX feature channels for the MapNet (``None``: no MapNet).
            token_dim: cross-attention width = MapNet token width.
            block_out_channels: UNet widths (multiples of 32); the first level has no attention blocks.
            layers_per_block: ResNet layers per UNet block.
            attention_heads: heads of the UNet attention layers.
            self_attention: per level, whether the transformer blocks use self-attention (costly at
                high resolution) besides cross-attention; level 0 has no transformer at all.
            factor: pixel-unshuffle factor (4 -> 48 latent channels).
            n_prompt_tokens: learned prompt tokens per prompt (positive, negative).
            mapnet_kwargs: extra :class:`~face2scene_core.mapnet.model.MapNet` arguments.
            cfg_scale: default guidance (1.0: no negative pass, half the CPU cost).
            identity_init: zero ``unet.conv_out`` so the untrained model returns its input.
            seed: initialisation seed (the global RNG is left untouched).
            net: ``"unet"`` (v1: diffusers ``UNet2DConditionModel`` with cross-attention) or ``"film"`` (v2:
                :class:`~.film_net.FiLMUNet`, convolutions modulated by the pooled tokens; ``layers_per_block``
                may then be one count per level; ``attention_heads`` and ``self_attention`` are unused).
            cond_dim, pool_queries: the FiLM net's code width and token-pooling queries (``net="film"``).
        """
        from ..mapnet.model import MapNet

        if net not in ("unet", "film"):
            raise ValueError(f"net must be 'unet' or 'film', got {net!r}")
        n = len(block_out_channels)
        if net == "film":
            self_attention = (False,) * n
        if n < 2 or len(self_attention) != n:
            raise ValueError(
                f"need >= 2 block_out_channels and one self_attention flag per level, got "
                f"{block_out_channels} and {self_attention}"
            )
        if n_prompt_tokens < 1:
            raise ValueError(f"n_prompt_tokens must be >= 1, got {n_prompt_tokens}")
        codec = PixelUnshuffleCodec(factor)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if net == "film":
                from .film_net import FiLMUNet

                unet = FiLMUNet(
                    in_channels=codec.latent_channels, out_channels=codec.latent_channels,
                    block_out_channels=tuple(block_out_channels),
                    layers_per_block=layers_per_block if isinstance(layers_per_block, int) else tuple(layers_per_block),
                    cross_attention_dim=token_dim, cond_dim=cond_dim, pool_queries=pool_queries,
                )
            else:
                unet = UNet2DConditionModel(
                    sample_size=64,
                    in_channels=codec.latent_channels,
                    out_channels=codec.latent_channels,
                    down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
                    up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
                    block_out_channels=tuple(block_out_channels),
                    layers_per_block=layers_per_block,
                    cross_attention_dim=token_dim,
                    attention_head_dim=attention_heads,
                    only_cross_attention=tuple(not sa for sa in self_attention),
                    mid_block_only_cross_attention=not self_attention[-1],
                    use_linear_projection=True,
                )
            if identity_init:
                nn.init.zeros_(unet.conv_out.weight)
                nn.init.zeros_(unet.conv_out.bias)
            mapnet = None
            if feature_channels is not None:
                mapnet = MapNet(in_channels=feature_channels, token_dim=token_dim, **(mapnet_kwargs or {}))
            prompts = torch.randn(2, n_prompt_tokens, token_dim) * 0.5
        return cls(
            unet, codec, prompts, mapnet=mapnet, learned_prompts=True, prediction_type="residual",
            cfg_scale=cfg_scale, train_unet_fully=True, backend="small",
        )


__all__ = [
    "OneStepRestorer",
    "POSITIVE_PROMPT",
    "NEGATIVE_PROMPT",
    "DEFAULT_CFG_SCALE",
    "PREDICTION_TYPES",
    "pad_to_multiple",
    "load_scheduler_config",
]
