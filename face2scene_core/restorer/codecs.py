"""Codecs between images and the restorer's latent space.

Both codecs share one interface, which is all :class:`~.model.OneStepRestorer` uses:

- ``latent_channels``: channels of the latent ``z``;
- ``downscale``: image pixels per latent cell along each axis;
- ``encode(x) -> z``: ``x`` float ``(B, 3, H, W)`` in ``[-1, 1]`` with ``H, W`` multiples of ``downscale``
  -> ``z`` ``(B, latent_channels, H / downscale, W / downscale)``;
- ``decode(z) -> x``: the inverse, images in ``[-1, 1]`` (approximately for the VAE; the VAE output is
  not clamped);
- ``spec()``: a JSON-serialisable description stored in adapter metadata.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn


def _check_image(x: torch.Tensor, factor: int, who: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who}.encode expects images (B, 3, H, W), got {shape}")
    if x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(
            f"{who}.encode needs height and width divisible by {factor}, got {x.shape[-2]}x{x.shape[-1]}"
        )


class VAECodec(AutoencoderKL):
    r"""The Stable Diffusion VAE as a codec: ``AutoencoderKL`` plus the codec interface.

    Takes exactly the ``AutoencoderKL`` config (so ``from_pretrained`` / ``from_single_file`` load into it).
    ``encode(x, sample=False, generator=None)`` returns the latent mean (or a sample when ``sample``)
    times ``config.scaling_factor``; ``decode(z)`` divides by it and returns the decoder output.
    Enable diffusers' tiled VAE with :meth:`set_tiling` for large images.

    Note: ``encode``/``decode`` return tensors, not ``AutoencoderKLOutput``/``DecoderOutput``; the raw
    diffusers behaviour stays reachable as ``AutoencoderKL.encode(codec, x)``.
    """

    @property
    def latent_channels(self) -> int:
        return int(self.config.latent_channels)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def spec(self) -> dict:
        return {
            "type": "vae",
            "latent_channels": self.latent_channels,
            "downscale": self.downscale,
            "block_out_channels": list(self.config.block_out_channels),
            "scaling_factor": float(self.config.scaling_factor),
        }

    def set_tiling(self, tile_size: int | None, *, overlap_factor: float = 0.25) -> None:
        """Use diffusers' tiled VAE for images larger than ``tile_size`` pixels (``None`` disables it)."""
        if tile_size is None:
            self.disable_tiling()
            return
        if tile_size < 2 * self.downscale:
            raise ValueError(f"VAE tile_size must be >= {2 * self.downscale} px, got {tile_size}")
        self.tile_sample_min_size = int(tile_size)
        self.tile_latent_min_size = int(tile_size) // self.downscale
        self.tile_overlap_factor = float(overlap_factor)
        self.enable_tiling()

    def encode(self, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None):
        """Images ``(B, 3, H, W)`` in ``[-1, 1]`` -> scaled latents ``(B, 4, H/8, W/8)``."""
        _check_image(x, self.downscale, type(self).__name__)
        dist = AutoencoderKL.encode(self, x).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        return z * self.config.scaling_factor

    def decode(self, z: torch.Tensor):
        """Scaled latents ``(B, 4, h, w)`` -> images ``(B, 3, 8h, 8w)``, about ``[-1, 1]`` (not clamped)."""
        return AutoencoderKL.decode(self, z / self.config.scaling_factor).sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Round trip ``decode(encode(x))`` (deterministic: the latent mean)."""
        return self.decode(self.encode(x))


class PixelUnshuffleCodec(nn.Module):
    """Lossless codec for the embedded CPU model: pixel-unshuffle, no learned weights.

    Args:
        factor (int, default 4): downscale factor; ``3 * factor**2`` latent channels (48 for 4).

    ``encode``: ``(B, 3, H, W)`` -> ``(B, 3 f^2, H/f, W/f)``; ``decode`` is its exact inverse.
    """

    def __init__(self, factor: int = 4):
        super().__init__()
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor!r}")
        self.factor = factor

    @property
    def latent_channels(self) -> int:
        return 3 * self.factor**2

    @property
    def downscale(self) -> int:
        return self.factor

    def spec(self) -> dict:
        return {"type": "pixel_unshuffle", "factor": self.factor}

    def encode(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        _check_image(x, self.factor, type(self).__name__)
        return F.pixel_unshuffle(x, self.factor)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"decode expects latents (B, {self.latent_channels}, h, w), got {tuple(z.shape)}")
        return F.pixel_shuffle(z, self.factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def codec_from_spec(spec: dict) -> PixelUnshuffleCodec:
    """Rebuild a weight-free codec from :meth:`spec` (the VAE needs its weights: load it instead)."""
    if spec.get("type") == "pixel_unshuffle":
        return PixelUnshuffleCodec(int(spec["factor"]))
    raise ValueError(f"codec {spec!r} cannot be rebuilt from metadata alone (a VAE needs its checkpoint)")


__all__ = ["VAECodec", "PixelUnshuffleCodec", "codec_from_spec"]
