"""Rebuild a ready :class:`~.model.OneStepRestorer` from an adapter file (and an SD-Turbo checkpoint where needed).

The one module that knows every backend: it imports :mod:`.model`, :mod:`.sd_turbo`, :mod:`.film_net` and
:mod:`.adapter`, none of which imports it back (``tests/test_restorer.py`` checks that the restorer package's
imports form no cycle).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from ..errors import ArchitectureMismatchError, WeightsNotFoundError
from ..mapnet.model import MapNet
from .adapter import load_adapter, read_adapter_spec
from .codecs import codec_from_spec
from .film_net import FiLMUNet
from .model import OneStepRestorer
from . import sd_turbo as _sd_turbo  # looked up at call time, so a patched load_sd_turbo is used

log = logging.getLogger(__name__)


def restorer_from_adapter(path: str | Path, *, sd_turbo: str | Path | None = None):
    """Build a :class:`~.model.OneStepRestorer` from an adapter file.

    A fully trained (small) model is rebuilt from the metadata alone; an SD-Turbo adapter also needs the
    base checkpoint ``sd_turbo`` (single ``.safetensors`` file or diffusers folder).
    """
    path = Path(path)
    spec = read_adapter_spec(path)
    mapnet = MapNet.from_config(spec["mapnet"]) if spec.get("mapnet") else None
    if spec["codec"].get("type") == "vae":
        if sd_turbo is None:
            raise WeightsNotFoundError(
                f"adapter '{path}' was trained on SD-Turbo: pass the SD-Turbo checkpoint too "
                "(sd_turbo=<sd_turbo.safetensors or diffusers folder>)"
            )
        restorer = _sd_turbo.load_sd_turbo(
            sd_turbo, mapnet=mapnet, prediction_type=spec["prediction_type"], cfg_scale=spec["cfg_scale"],
            unet_lora_rank=(spec.get("unet_lora") or {}).get("rank"),
            vae_lora_rank=(spec.get("vae_lora") or {}).get("rank"),
        )
    else:
        if sd_turbo is not None:
            raise ArchitectureMismatchError(
                f"adapter '{path.name}' was trained for the embedded model, not SD-Turbo; choose the embedded "
                "backend (no SD-Turbo checkpoint), or an SD-Turbo adapter."
            )
        if not spec.get("train_unet_fully"):
            raise ArchitectureMismatchError(
                f"adapter '{path}' holds no full UNet (LoRA only) and no base checkpoint type is known for "
                f"codec {spec['codec']!r}; it cannot be rebuilt from the file alone"
            )
        net_name = spec.get("net", "UNet2DConditionModel")
        if net_name == "FiLMUNet":
            unet = FiLMUNet.from_config(spec["unet_config"])
        elif net_name == "UNet2DConditionModel":
            unet = UNet2DConditionModel.from_config(spec["unet_config"])
        else:
            raise ArchitectureMismatchError(f"adapter '{path}' needs a network {net_name!r} this package does not have; "
                                            "update the package")
        restorer = OneStepRestorer(
            unet, codec_from_spec(spec["codec"]), torch.zeros(spec["prompt_shape"]), mapnet=mapnet,
            learned_prompts=spec["learned_prompts"], prediction_type=spec["prediction_type"],
            cfg_scale=spec["cfg_scale"], timestep=spec["timestep"], scheduler_config=spec.get("scheduler_config"),
            train_unet_fully=True, backend=spec["backend"],
        )
    load_adapter(restorer, path)
    return restorer


def load_sd_turbo_restorer(sd_turbo: str | Path, adapter: str | Path) -> OneStepRestorer:
    """SD-Turbo checkpoint + Face2Scene adapter (MapNet, LoRA, conv_in) -> ready restorer."""
    return restorer_from_adapter(adapter, sd_turbo=sd_turbo)


__all__ = ["load_sd_turbo_restorer", "restorer_from_adapter"]
