"""LoRA on the SD-Turbo VAE encoder and UNet through peft (S3Diff's targets, DESIGN.md).

- VAE encoder: rank 16 on modules matching :data:`VAE_LORA_TARGETS` (a regex on the module name).
- UNet: rank 32 on :data:`UNET_LORA_TARGETS` (module-name suffixes); ``unet.conv_in`` is trained in full.
- Everything else stays frozen. LoRA B matrices start at zero (``init_lora_weights="gaussian"``),
  so a freshly adapted model computes exactly what the base model computes.
- ``lora_alpha`` is peft's default (8), as in S3Diff's ``LoraConfig`` calls: the LoRA update is scaled
  by ``alpha / rank`` (0.25 on the UNet, 0.5 on the VAE encoder).
"""

from __future__ import annotations

from peft import LoraConfig
from torch import nn

ADAPTER_NAME = "default"
DEFAULT_ALPHA = 8  # peft's default lora_alpha, which S3Diff keeps

#: VAE encoder LoRA targets (regex, full match on the module name), as in S3Diff.
VAE_LORA_TARGETS = r"^encoder\..*(conv1|conv2|conv_in|conv_shortcut|conv|conv_out|to_k|to_q|to_v|to_out\.0)$"

#: UNet LoRA targets (module-name suffixes), as in S3Diff.
UNET_LORA_TARGETS = (
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
    "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
)


def make_lora_config(rank: int, target_modules: str | list[str] | tuple[str, ...], *,
                     alpha: int = DEFAULT_ALPHA) -> LoraConfig:
    """A peft ``LoraConfig`` with gaussian init (B = 0) and ``lora_alpha = alpha``."""
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
    if alpha <= 0:
        raise ValueError(f"LoRA alpha must be positive, got {alpha!r}")
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets)


def add_lora(model: nn.Module, rank: int, target_modules, *, alpha: int = DEFAULT_ALPHA) -> None:
    """Freeze ``model`` and add a trainable LoRA adapter (``model`` must be a diffusers ``PeftAdapterMixin``)."""
    model.requires_grad_(False)
    model.add_adapter(make_lora_config(rank, target_modules, alpha=alpha), adapter_name=ADAPTER_NAME)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


def lora_spec(rank: int, target_modules, alpha: int = DEFAULT_ALPHA) -> dict:
    """JSON description of a LoRA adapter, stored in adapter metadata and compared on load."""
    return {
        "rank": int(rank),
        "alpha": int(alpha),
        "target_modules": target_modules if isinstance(target_modules, str) else list(target_modules),
    }


__all__ = ["ADAPTER_NAME", "DEFAULT_ALPHA", "VAE_LORA_TARGETS", "UNET_LORA_TARGETS", "make_lora_config", "add_lora", "lora_spec"]
