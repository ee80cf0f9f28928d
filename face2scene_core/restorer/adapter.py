"""Restorer adapters: everything Face2Scene trains, in ONE safetensors file with its config as metadata.

Tensor keys (prefix -> content):

- ``mapnet.*``      MapNet weights (when the restorer has one);
- ``unet_lora.*``   peft LoRA weights of the UNet (``get_peft_model_state_dict``), and
  ``unet.conv_in.*`` the fully trained input conv (LoRA mode);
- ``vae_lora.*``    peft LoRA weights of the VAE encoder;
- ``unet.*``        the whole UNet (``train_unet_fully``: the small embedded model);
- ``prompt_embeds`` learned prompt embeddings ``(2, n, D)`` (no text encoder).

Metadata: ``format`` = ``"face2scene.restorer-adapter"``, ``format_version`` and ``spec`` (JSON of
:meth:`OneStepRestorer.spec`: backend, prediction type, token width, codec, LoRA ranks/targets, MapNet
and UNet configs...). Loading compares the spec with the restorer and raises
:class:`~face2scene_core.errors.ArchitectureMismatchError` saying what differs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save

from ..errors import ArchitectureMismatchError, WeightsNotFoundError
from ..imageio import write_bytes_atomic
from .lora import ADAPTER_NAME

log = logging.getLogger(__name__)

FORMAT = "face2scene.restorer-adapter"
FORMAT_VERSION = "1"

#: spec fields that must match between an adapter file and the restorer it is loaded into.
_CHECKED = ("backend", "prediction_type", "timestep", "token_dim", "codec", "unet_lora", "vae_lora",
            "train_unet_fully", "learned_prompts", "mapnet")
#: UNet config fields compared in LoRA mode (the base UNet comes from the checkpoint, not the adapter).
_UNET_ARCH = ("in_channels", "out_channels", "block_out_channels", "layers_per_block", "cross_attention_dim",
              "down_block_types", "up_block_types", "attention_head_dim", "use_linear_projection")


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def adapter_state_dict(restorer) -> dict[str, torch.Tensor]:
    """The tensors :func:`save_adapter` writes (see the module docstring for the key layout)."""
    sd: dict[str, torch.Tensor] = {}
    if restorer.mapnet is not None:
        sd.update({f"mapnet.{k}": v for k, v in restorer.mapnet.state_dict().items()})
    if restorer.train_unet_fully:
        sd.update({f"unet.{k}": v for k, v in restorer.unet.state_dict().items()})
    elif restorer.unet_lora is not None:
        lora = get_peft_model_state_dict(restorer.unet, adapter_name=ADAPTER_NAME)
        sd.update({f"unet_lora.{k}": v for k, v in lora.items()})
        sd.update({f"unet.conv_in.{k}": v for k, v in restorer.unet.conv_in.state_dict().items()})
    if restorer.vae_lora is not None:
        lora = get_peft_model_state_dict(restorer.codec, adapter_name=ADAPTER_NAME)
        sd.update({f"vae_lora.{k}": v for k, v in lora.items()})
    if restorer.learned_prompts:
        sd["prompt_embeds"] = restorer.prompt_embeds
    return {k: _plain(v) for k, v in sd.items()}


def save_adapter(restorer, path: str | Path) -> Path:
    """Write ``restorer``'s trained parts and spec to ``path`` (one ``.safetensors`` file, atomically)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"adapter path must end in .safetensors, got '{path}'")
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "spec": json.dumps(restorer.spec())}
    data = safetensors_save(adapter_state_dict(restorer), metadata=metadata)
    return write_bytes_atomic(path, data)


def read_adapter_spec(path: str | Path) -> dict:
    """The spec stored in an adapter file; raises if the file is missing or not a Face2Scene adapter."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"restorer adapter not found: '{path}'. Pass the .safetensors file written by save_adapter "
            "(e.g. by `face2scene train-restorer`)."
        )
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArchitectureMismatchError(f"'{path}' is not a readable safetensors file ({exc}); expected a "
                                        "Face2Scene restorer adapter") from exc
    if meta.get("format") != FORMAT:
        raise ArchitectureMismatchError(
            f"'{path}' is not a Face2Scene restorer adapter (metadata format={meta.get('format')!r}, expected "
            f"{FORMAT!r}); it may be a plain LoRA or a base checkpoint: pass it where that is expected"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArchitectureMismatchError(
            f"'{path}' is adapter format version {meta.get('format_version')!r}; this package reads "
            f"version {FORMAT_VERSION}: update the package or re-export the adapter"
        )
    try:
        return json.loads(meta["spec"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ArchitectureMismatchError(f"'{path}' has no valid 'spec' in its metadata") from exc


def _mismatch(path: Path, field: str, found, expected) -> ArchitectureMismatchError:
    return ArchitectureMismatchError(
        f"adapter '{path}' does not fit this restorer: {field} is {found!r} in the file but {expected!r} here. "
        "Load it into a restorer of the architecture it was trained for "
        "(face2scene_core.restorer.loading.restorer_from_adapter rebuilds one from the file)."
    )


def check_adapter_spec(restorer, spec: dict, path: str | Path = "<adapter>") -> None:
    """Raise :class:`ArchitectureMismatchError` naming the first field where ``spec`` and ``restorer`` differ."""
    path = Path(path)
    mine = restorer.spec()
    if spec.get("net", "UNet2DConditionModel") != mine["net"]:  # adapters before v2 hold no "net": the diffusers UNet
        raise _mismatch(path, "net", spec.get("net", "UNet2DConditionModel"), mine["net"])
    for field in _CHECKED:
        if spec.get(field) != mine[field]:
            raise _mismatch(path, field, spec.get(field), mine[field])
    if spec.get("learned_prompts") and spec.get("prompt_shape") != mine["prompt_shape"]:
        raise _mismatch(path, "prompt_shape", spec.get("prompt_shape"), mine["prompt_shape"])
    theirs_unet = spec.get("unet_config") or {}
    keys = mine["unet_config"].keys() if mine["train_unet_fully"] else _UNET_ARCH
    for k in keys:
        if k in mine["unet_config"] and theirs_unet.get(k) != mine["unet_config"][k]:
            raise _mismatch(path, f"unet_config.{k}", theirs_unet.get(k), mine["unet_config"][k])


def _load_module(module: torch.nn.Module, sd: dict, path: Path, what: str) -> None:
    try:
        result = module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ArchitectureMismatchError(f"adapter '{path}': {what} weights do not fit: {exc}") from exc
    assert not result.missing_keys and not result.unexpected_keys, result


def _load_lora(module: torch.nn.Module, sd: dict, path: Path, what: str) -> None:
    expected = get_peft_model_state_dict(module, adapter_name=ADAPTER_NAME)
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    bad_shapes = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad_shapes:
        raise ArchitectureMismatchError(
            f"adapter '{path}': {what} LoRA does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shapes {bad_shapes[:3]}"
        )
    set_peft_model_state_dict(module, sd, adapter_name=ADAPTER_NAME)


def load_adapter(restorer, path: str | Path) -> None:
    """Load an adapter into ``restorer`` in place (after checking its spec); tensors keep the restorer's dtype."""
    path = Path(path)
    spec = read_adapter_spec(path)
    check_adapter_spec(restorer, spec, path)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():
            prefix, _, rest = key.partition(".")
            if key == "prompt_embeds":
                prefix, rest = "prompt_embeds", ""
            elif prefix == "unet" and rest.startswith("conv_in.") and not restorer.train_unet_fully:
                prefix, rest = "conv_in", rest[len("conv_in."):]
            groups.setdefault(prefix, {})[rest] = fh.get_tensor(key)
    unknown = set(groups) - {"mapnet", "unet", "unet_lora", "conv_in", "vae_lora", "prompt_embeds"}
    if unknown:
        raise ArchitectureMismatchError(f"adapter '{path}' holds unknown tensor groups {sorted(unknown)}")
    if restorer.mapnet is not None:
        _load_module(restorer.mapnet, groups.get("mapnet", {}), path, "MapNet")
    if restorer.train_unet_fully:
        _load_module(restorer.unet, groups.get("unet", {}), path, "UNet")
    elif restorer.unet_lora is not None:
        _load_lora(restorer.unet, groups.get("unet_lora", {}), path, "UNet")
        _load_module(restorer.unet.conv_in, groups.get("conv_in", {}), path, "UNet conv_in")
    if restorer.vae_lora is not None:
        _load_lora(restorer.codec, groups.get("vae_lora", {}), path, "VAE")
    if restorer.learned_prompts:
        prompts = groups.get("prompt_embeds", {}).get("")
        if prompts is None or prompts.shape != restorer.prompt_embeds.shape:
            raise ArchitectureMismatchError(f"adapter '{path}': learned prompt embeddings missing or mis-shaped")
        with torch.no_grad():
            restorer.prompt_embeds.copy_(prompts)
    log.info("loaded restorer adapter %s (%s backend)", path, spec["backend"])


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "adapter_state_dict",
    "save_adapter",
    "load_adapter",
    "read_adapter_spec",
    "check_adapter_spec",
]
