"""Stage-2 training losses: L2, LPIPS (user-supplied VGG16 backbone) and the GAN objectives.

Total generator loss (S3Diff values, the paper builds on S3Diff)::

    L = lambda_l2 * L2 + lambda_lpips * LPIPS + lambda_gan * GAN        (2.0, 5.0, 0.5)

LPIPS needs two pieces of weights:

* the VGG16 ``features`` backbone (ImageNet). It cannot be downloaded at run time here, so the user supplies it
  as a safetensors file holding ``torchvision.models.vgg16(weights="IMAGENET1K_V1").features.state_dict()``
  (keys ``0.weight``, ``0.bias``, ``2.weight`` ...; a full ``vgg16`` state dict with ``features.`` prefixes and
  ``classifier.*`` keys is accepted too). On a machine with internet::

      import torchvision, safetensors.torch
      sd = torchvision.models.vgg16(weights="IMAGENET1K_V1").features.state_dict()
      safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, "vgg16_features.safetensors")

* the five linear heads calibrated on human judgements. They ship inside the ``lpips`` PyPI wheel
  (``lpips/weights/v0.1/vgg.pth``: five plain tensors). They are read with ``torch.load(weights_only=True)``,
  which refuses anything but tensors; a safetensors copy can be passed instead with ``heads_weights=``.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ..errors import ArchitectureMismatchError, MissingBackboneError, WeightsNotFoundError

log = logging.getLogger(__name__)

# torchvision's vgg16 ``features`` layout: a conv is always followed by a ReLU; "M" is a 2x2 max-pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# Index (exclusive) in ``features`` after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: the LPIPS taps.
LPIPS_VGG_TAPS = (4, 9, 16, 23, 30)
LPIPS_VGG_CHANNELS = (64, 128, 256, 512, 512)

VGG_HELP = (
    "Provide torchvision's ImageNet VGG16 `features` as a safetensors file (config key `lpips_backbone`). "
    "On a machine with internet: sd = torchvision.models.vgg16(weights='IMAGENET1K_V1').features.state_dict(); "
    "safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, 'vgg16_features.safetensors')."
)


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between two tensor images of the same shape (scalar, float32)."""
    if pred.shape != target.shape:
        raise ValueError(f"l2_loss: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    return F.mse_loss(pred.float(), target.float())


def psnr_gain_loss(pred: torch.Tensor, target: torch.Tensor, lq: torch.Tensor, eps: float = 1e-5,
                   reduction: str = "mean") -> torch.Tensor:
    """Mean over samples of ``10 log10((MSE(pred, target) + eps) / (MSE(lq, target) + eps))``: the dB each sample's
    output loses against its own input (negative = better). The input term is a constant, so the gradient is the
    PSNR loss's: every sample counts by its relative error, a mild one as much as a heavy one.
    ``reduction="none"`` returns the per-sample values ``(B,)``."""
    if not pred.shape == target.shape == lq.shape:
        raise ValueError(f"psnr_gain_loss: shapes {tuple(pred.shape)}, {tuple(target.shape)}, {tuple(lq.shape)} differ")
    dims = tuple(range(1, pred.ndim))
    out = ((pred.float() - target.float()) ** 2).mean(dims)
    base = ((lq.float() - target.float()) ** 2).mean(dims)
    per_sample = 10.0 * torch.log10((out + eps) / (base + eps))
    if reduction == "none":
        return per_sample
    if reduction != "mean":
        raise ValueError(f"psnr_gain_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    return per_sample.mean()


def psnr_harm_loss(pred: torch.Tensor, target: torch.Tensor, lq: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean over samples of the dB an output loses against its own input where it is worse than that input
    (``relu`` of :func:`psnr_gain_loss`'s per-sample values; 0 for a sample the output improves). Added to the PSNR
    loss it doubles the pull on exactly the samples a photographer would see harmed (do no harm)."""
    return torch.relu(psnr_gain_loss(pred, target, lq, eps, reduction="none")).mean()


def vgg16_features() -> nn.Sequential:
    """An untrained VGG16 ``features`` stack whose module indices match torchvision's (so its state dict loads)."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in VGG16_LAYOUT:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            c_in = int(v)
    return nn.Sequential(*layers)


def lpips_heads_path(net: str = "vgg", version: str = "0.1") -> Path:
    """Path of the linear-head file shipped in the ``lpips`` wheel, found without importing the package.

    Raises :class:`MissingBackboneError` when ``lpips`` is not installed.
    """
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise MissingBackboneError(
            "LPIPS needs the linear heads shipped in the `lpips` package: `pip install lpips` "
            "(or pass a safetensors copy of the heads as `lpips_heads`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / f"v{version}" / f"{net}.pth"
    if not path.is_file():
        raise MissingBackboneError(f"the installed `lpips` package has no '{path}'; reinstall it (`pip install lpips`).")
    return path


def _load_heads(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    # The wheel's heads are pickled state dicts of plain tensors; weights_only=True refuses any other object.
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _load_vgg(path: Path) -> dict[str, torch.Tensor]:
    sd = load_file(str(path))
    if any(k.startswith("features.") for k in sd):
        sd = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    return sd


class LPIPSLoss(nn.Module):
    """LPIPS (Zhang et al. 2018, VGG variant v0.1) as a frozen, differentiable loss.

    Args:
        backbone_weights (str | Path | None): safetensors file with torchvision's VGG16 ``features`` state dict.
            ``None`` raises :class:`MissingBackboneError` (the message says how to make the file).
        heads_weights (str | Path | None): the five linear heads; default: ``lpips/weights/v0.1/vgg.pth`` from the
            installed ``lpips`` wheel. A ``.safetensors`` file with keys ``lin{i}.model.1.weight`` works too.
        reduction ("mean" | "none"): mean over the batch (scalar) or one value per sample ``(B,)``.

    ``forward(pred, target)`` takes tensor images ``(B, 3, H, W)`` in ``[0, 1]`` (H, W >= 16) and returns the
    distance (0 for identical images). All weights are frozen; gradients flow to ``pred``.
    """

    def __init__(self, backbone_weights: str | Path | None, *, heads_weights: str | Path | None = None,
                 reduction: Literal["mean", "none"] = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        if backbone_weights is None:
            raise MissingBackboneError(f"LPIPS needs the VGG16 backbone weights, which cannot be downloaded here. {VGG_HELP}")
        bpath = Path(backbone_weights).expanduser()
        if not bpath.is_file():
            raise WeightsNotFoundError(f"LPIPS backbone file not found: '{bpath}'. {VGG_HELP}")
        if bpath.suffix != ".safetensors":
            raise WeightsNotFoundError(f"LPIPS backbone '{bpath}' must be a .safetensors file (never a pickle). {VGG_HELP}")
        hpath = Path(heads_weights).expanduser() if heads_weights is not None else lpips_heads_path("vgg", "0.1")
        if not hpath.is_file():
            raise WeightsNotFoundError(f"LPIPS heads file not found: '{hpath}'.")
        self.reduction = reduction
        self.net = vgg16_features()
        try:
            self.net.load_state_dict(_load_vgg(bpath), strict=True)
        except RuntimeError as exc:
            raise ArchitectureMismatchError(
                f"'{bpath}' is not a VGG16 `features` state dict ({str(exc).splitlines()[0]}). {VGG_HELP}"
            ) from exc
        heads = _load_heads(hpath)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in LPIPS_VGG_CHANNELS)
        for i, lin in enumerate(self.lins):
            key = f"lin{i}.model.1.weight"
            if key not in heads or tuple(heads[key].shape) != tuple(lin.weight.shape):
                raise ArchitectureMismatchError(f"'{hpath}' is not the LPIPS VGG heads file (bad or missing '{key}').")
            lin.weight.data.copy_(heads[key].float())
        # LPIPS ScalingLayer: maps [-1, 1] inputs to ImageNet statistics.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPSLoss":
        """Always stays in eval mode: the loss network is frozen."""
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, start = [], 0
        for end in LPIPS_VGG_TAPS:
            for layer in self.net[start:end]:
                x = layer(x)
            feats.append(x)
            start = end
        return feats

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(f"LPIPSLoss expects two (B, 3, H, W) tensors of one shape, got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        x = torch.cat([pred, target]).float() * 2.0 - 1.0
        x = (x - self.shift) / self.scale
        dist = x.new_zeros(pred.shape[0])
        for f, lin in zip(self._taps(x), self.lins):
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)  # unit-normalise channels
            fp, ft = f.chunk(2)
            dist = dist + lin((fp - ft).pow(2)).mean(dim=(1, 2, 3))
        return dist.mean() if self.reduction == "mean" else dist


GanLossKind = Literal["hinge", "ns"]


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: GanLossKind = "hinge") -> torch.Tensor:
    """Discriminator loss on logits of real (HQ) and fake (restored) images (any shape, scalar out).

    ``hinge``: mean(relu(1 - real)) + mean(relu(1 + fake)); ``ns`` (non-saturating): softplus(-real) + softplus(fake).
    """
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    if kind == "ns":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    raise ValueError(f"GAN loss kind must be 'hinge' or 'ns', got {kind!r}")


def generator_loss(fake_logits: torch.Tensor, kind: GanLossKind = "hinge") -> torch.Tensor:
    """Generator (restorer) adversarial loss on the discriminator's logits of restored images (scalar)."""
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "ns":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"GAN loss kind must be 'hinge' or 'ns', got {kind!r}")


__all__ = [
    "l2_loss",
    "vgg16_features",
    "lpips_heads_path",
    "LPIPSLoss",
    "discriminator_loss",
    "generator_loss",
    "VGG_HELP",
]
