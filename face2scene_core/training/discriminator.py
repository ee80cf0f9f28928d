"""Vision-aided discriminator: a frozen DINO ViT backbone with trainable multi-level heads.

Following Vision-aided GAN (Kumari et al. 2022) as used by S3Diff: the pretrained self-supervised ViT is frozen;
small heads read the tokens (CLS + patches) of several transformer layers and emit one logit per token. Only the
heads train. The backbone cannot be downloaded here: the user points ``from_pretrained`` at a local folder in
the Hugging Face layout (``config.json`` + ``model.safetensors``) of a ``Dinov2Model`` (e.g. facebook/dinov2-small)
or a ``ViTModel`` (e.g. facebook/dino-vits16). Weights are read from safetensors only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..errors import ArchitectureMismatchError, MissingBackboneError, WeightsNotFoundError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SUPPORTED_MODEL_TYPES = ("dinov2", "vit")

DINO_HELP = (
    "Provide a local folder with a DINO ViT in the Hugging Face layout (config.json + model.safetensors), e.g. "
    "`huggingface-cli download facebook/dinov2-small --include config.json model.safetensors --local-dir DIR` "
    "on a machine with internet, and set `dino_backbone: DIR`."
)


class TokenHead(nn.Module):
    """Per-token logit head on one layer's tokens ``(B, N, D) -> (B, N)``: LayerNorm, Linear, LeakyReLU, Linear."""

    def __init__(self, *, dim: int, hidden: int, spectral: bool = True) -> None:
        super().__init__()
        wrap = spectral_norm if spectral else (lambda m: m)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = wrap(nn.Linear(dim, hidden))
        self.fc2 = wrap(nn.Linear(hidden, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.leaky_relu(self.fc1(self.norm(tokens)), 0.2)).squeeze(-1)  # b, n


class DinoDiscriminator(nn.Module):
    """Frozen ViT backbone + one trainable :class:`TokenHead` per selected layer.

    Args:
        backbone (transformers ``Dinov2Model`` | ``ViTModel``): frozen by this constructor (``requires_grad=False``,
            eval mode for good).
        layers (Sequence[int]): 0-based transformer blocks whose output tokens feed a head (default ``(2, 5, 8, 11)``,
            clipped to the backbone's depth; negative indices count from the last block).
        head_dim (int): hidden width of each head (default 256).
        resolution (int): side the images are resized to before the backbone (default 224; multiple of the patch).
        spectral (bool): spectral normalisation on the heads' linear layers (default True).

    ``forward(images, backbone_grad=True)`` takes tensor images ``(B, 3, H, W)`` in ``[0, 1]`` and returns logits
    ``(B, len(layers) * (1 + n_patches))`` float32. ``backbone_grad=False`` runs the backbone without autograd (the
    discriminator step, where only the heads need gradients); the generator step keeps it so gradients reach the
    images through the frozen backbone.
    """

    def __init__(self, backbone: nn.Module, *, layers: Sequence[int] = (2, 5, 8, 11), head_dim: int = 256,
                 resolution: int = 224, spectral: bool = True) -> None:
        super().__init__()
        config = getattr(backbone, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ArchitectureMismatchError(
                f"the discriminator backbone must be a DINO ViT ({', '.join(SUPPORTED_MODEL_TYPES)}), got {model_type!r}. "
                + DINO_HELP
            )
        depth = int(config.num_hidden_layers)
        if not layers:
            raise ValueError("layers must name at least one transformer block")
        resolved = sorted({(i if i >= 0 else depth + i) for i in layers})
        bad = [i for i in resolved if not 0 <= i < depth]
        if bad:
            raise ValueError(f"layers {list(layers)} out of range for a {depth}-block backbone")
        patch = int(config.patch_size)
        if resolution < patch or resolution % patch:
            raise ValueError(f"resolution must be a positive multiple of the patch size {patch}, got {resolution}")
        if head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {head_dim}")
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.layers = tuple(resolved)
        self.resolution = int(resolution)
        self.model_type = model_type
        self.heads = nn.ModuleList(
            TokenHead(dim=int(config.hidden_size), hidden=head_dim, spectral=spectral) for _ in self.layers
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, folder: str | Path | None, **kwargs) -> "DinoDiscriminator":
        """Load the backbone from a local Hugging Face folder (safetensors only, never a download)."""
        if folder is None:
            raise MissingBackboneError(f"the GAN loss needs a DINO backbone, which cannot be downloaded here. {DINO_HELP}")
        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            raise WeightsNotFoundError(f"DINO backbone folder '{path}' has no config.json. {DINO_HELP}")
        if not any(path.glob("*.safetensors")):
            raise WeightsNotFoundError(f"DINO backbone folder '{path}' has no .safetensors weights. {DINO_HELP}")
        from transformers import AutoConfig, Dinov2Model, ViTModel

        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        model_cls = {"dinov2": Dinov2Model, "vit": ViTModel}.get(config.model_type)
        if model_cls is None:
            raise ArchitectureMismatchError(
                f"'{path}' holds a {config.model_type!r} model, not a DINO ViT (dinov2 or vit). {DINO_HELP}"
            )
        extra = {"add_pooling_layer": False} if config.model_type == "vit" else {}
        backbone = model_cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True, **extra)
        return cls(backbone, **kwargs)

    def train(self, mode: bool = True) -> "DinoDiscriminator":
        """Heads follow ``mode``; the frozen backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def head_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters (the heads only)."""
        return [p for p in self.heads.parameters() if p.requires_grad]

    def _tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(images.float(), size=(self.resolution, self.resolution), mode="bilinear",
                          align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        kwargs = {"interpolate_pos_encoding": True} if self.model_type == "vit" else {}
        out = self.backbone(pixel_values=x, output_hidden_states=True, **kwargs)
        # hidden_states[0] is the embedding output; block i's output is hidden_states[i + 1]
        return [out.hidden_states[i + 1] for i in self.layers]  # each b, 1 + n_patches, d

    def forward(self, images: torch.Tensor, *, backbone_grad: bool = True) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"DinoDiscriminator expects (B, 3, H, W) images, got {tuple(images.shape)}")
        if backbone_grad:
            tokens = self._tokens(images)
        else:
            with torch.no_grad():
                tokens = self._tokens(images)
        logits = [head(t.float()) for head, t in zip(self.heads, tokens)]
        return torch.cat(logits, dim=1)  # b, layers * (1 + n_patches)


__all__ = ["DinoDiscriminator", "TokenHead", "DINO_HELP"]
