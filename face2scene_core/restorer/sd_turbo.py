"""Load SD-Turbo offline (single-file checkpoint or diffusers folder) and build SD-shaped test models.

SD-Turbo is the SD 2.1 architecture: UNet with cross-attention 1024, KL-VAE (4 latent channels),
OpenCLIP ViT-H text encoder whose *penultimate* layer (+ final LayerNorm) gives the context; here a
transformers ``CLIPTextModel`` with 23 layers. The configs ship in ``restorer/configs/sd_turbo/``;
the tokenizer is open_clip's (its BPE vocabulary ships in the ``open-clip-torch`` wheel). The text
encoder is used once, to cache the positive/negative prompt embeddings, and then dropped.

Before anything is loaded, the safetensors *header* (key names and shapes) is checked against the
expected architecture, so an SD 1.x / SDXL / unrelated file raises
:class:`~face2scene_core.errors.ArchitectureMismatchError` saying what it is. Weights are read from
safetensors only, never from pickles.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ..errors import ArchitectureMismatchError, WeightsNotFoundError
from .codecs import VAECodec
from .model import (
    DEFAULT_CFG_SCALE,
    NEGATIVE_PROMPT,
    POSITIVE_PROMPT,
    SD_TURBO_CONFIG_DIR,
    OneStepRestorer,
)

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
#: where the OpenCLIP text tower lives: LDM/stablediffusion layout, and the sgm (generative-models) layout
#: of the official sd_turbo.safetensors
OPENCLIP_PREFIXES = ("cond_stage_model.model.", "conditioner.embedders.0.model.")
CLIP_L_PREFIX = "cond_stage_model.transformer."
CONTEXT_LENGTH = 77


@dataclass
class SDComponents:
    """UNet + VAE (+ text encoder) of an SD-2.1-shaped model, and the config folder describing them."""

    unet: UNet2DConditionModel
    vae: VAECodec
    text_encoder: nn.Module | None
    config_dir: Path = SD_TURBO_CONFIG_DIR

    def scheduler_config(self) -> dict:
        return json.loads((self.config_dir / "scheduler" / "scheduler_config.json").read_text())

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write a diffusers-style folder (``unet/``, ``vae/``, ``text_encoder/``, ``scheduler/``; safetensors)."""
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        self.vae.save_pretrained(folder / "vae", safe_serialization=True)
        if self.text_encoder is not None:
            self.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
        sched = folder / "scheduler"
        sched.mkdir(parents=True, exist_ok=True)
        (sched / "scheduler_config.json").write_text(json.dumps(self.scheduler_config(), indent=1))
        return folder


# ---------------------------------------------------------------------------------------- configs
def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise WeightsNotFoundError(f"model config not found: '{path}' (a config folder needs unet/, vae/, "
                                   "text_encoder/ and scheduler/ configs like restorer/configs/sd_turbo/)")
    return json.loads(path.read_text())


def load_configs(config_dir: str | Path = SD_TURBO_CONFIG_DIR) -> dict[str, dict]:
    """The ``unet``, ``vae`` and ``text_encoder`` configs of ``config_dir`` (default: bundled SD-Turbo)."""
    config_dir = Path(config_dir)
    return {
        "unet": _read_json(config_dir / "unet" / "config.json"),
        "vae": _read_json(config_dir / "vae" / "config.json"),
        "text_encoder": _read_json(config_dir / "text_encoder" / "config.json"),
    }


# ---------------------------------------------------------------------------------------- checks
def read_header(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a safetensors file, read from its header only (no tensor data)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArchitectureMismatchError(
            f"'{path}' is not a readable safetensors file ({exc}); expected an SD-Turbo checkpoint "
            "(.safetensors; .ckpt pickles are not loaded for safety: convert them first)"
        ) from exc


def describe_checkpoint(shapes: dict[str, tuple[int, ...]]) -> str:
    """A short human description of what a (single-file) checkpoint header looks like."""
    keys = list(shapes)
    if any(k.startswith("conditioner.embedders.1.") for k in keys) or f"{UNET_PREFIX}label_emb.0.0.weight" in shapes:
        return "an SDXL checkpoint (conditioner.embedders.1 / label_emb keys)"
    to_k = [v for k, v in shapes.items() if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")]
    if to_k:
        width = to_k[0][1]
        text = ("OpenCLIP text encoder" if open_clip_prefix(shapes)
                else "CLIP ViT-L text encoder" if any(k.startswith(CLIP_L_PREFIX) for k in keys)
                else "no text encoder")
        family = {768: "SD 1.x", 1024: "SD 2.x"}.get(width, "unknown family")
        return f"a Stable Diffusion checkpoint ({family}: cross-attention {width}, {text})"
    if any(k.startswith(("down_blocks.", "mid_block.")) for k in keys):
        return "a diffusers-format model file (not a single-file checkpoint)"
    sample = ", ".join(f"'{k}'" for k in keys[:3])
    return f"not a Stable Diffusion checkpoint ({len(keys)} tensors, e.g. {sample})"


def open_clip_prefix(shapes: dict) -> str | None:
    """The key prefix of the OpenCLIP text tower in a checkpoint (``None`` if there is none)."""
    return next((p for p in OPENCLIP_PREFIXES if f"{p}token_embedding.weight" in shapes), None)


def check_single_file(path: str | Path, configs: dict[str, dict]) -> dict[str, tuple[int, ...]]:
    """Check a single-file checkpoint header against ``configs``; return the header shapes.

    Raises :class:`ArchitectureMismatchError` naming what was found when it is not that architecture.
    """
    path = Path(path)
    shapes = read_header(path)
    found = describe_checkpoint(shapes)
    unet_cfg, vae_cfg, text_cfg = configs["unet"], configs["vae"], configs["text_encoder"]
    expected = (f"an SD 2.1-architecture checkpoint (UNet cross-attention {unet_cfg['cross_attention_dim']}, "
                f"OpenCLIP text encoder {text_cfg['hidden_size']}-d) such as SD-Turbo")

    def fail(detail: str) -> ArchitectureMismatchError:
        return ArchitectureMismatchError(f"'{path}' is {found}; {detail}. Expected {expected}.")

    if "SDXL" in found:
        raise fail("SDXL is not supported")
    if not any(k.startswith(UNET_PREFIX) for k in shapes):
        raise fail(f"it has no '{UNET_PREFIX}*' UNet weights")
    if not any(k.startswith(VAE_PREFIX) for k in shapes):
        raise fail(f"it has no '{VAE_PREFIX}*' VAE weights")
    to_k = {k: v for k, v in shapes.items() if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")}
    if not to_k or any(v[1] != unet_cfg["cross_attention_dim"] for v in to_k.values()):
        width = next(iter(to_k.values()))[1] if to_k else None
        raise fail(f"its UNet cross-attention width is {width}, not {unet_cfg['cross_attention_dim']}")
    conv_in = shapes.get(f"{UNET_PREFIX}input_blocks.0.0.weight")
    want = (unet_cfg["block_out_channels"][0], unet_cfg["in_channels"], 3, 3)
    if conv_in is None or tuple(conv_in[:2]) != want[:2]:
        raise fail(f"its UNet input conv is {conv_in}, expected {want}")
    vae_in = shapes.get(f"{VAE_PREFIX}encoder.conv_in.weight")
    if vae_in is None or vae_in[0] != vae_cfg["block_out_channels"][0]:
        raise fail(f"its VAE encoder input conv is {vae_in}, expected {vae_cfg['block_out_channels'][0]} channels")
    if any(k.startswith(CLIP_L_PREFIX) for k in shapes):
        raise fail("its text encoder is CLIP ViT-L (SD 1.x), not OpenCLIP")
    prefix = open_clip_prefix(shapes)
    if prefix is None:
        raise fail(f"it has no OpenCLIP text encoder (keys {' or '.join(p + '*' for p in OPENCLIP_PREFIXES)})")
    emb = shapes[f"{prefix}token_embedding.weight"]
    if tuple(emb) != (text_cfg["vocab_size"], text_cfg["hidden_size"]):
        raise fail(f"its OpenCLIP token embedding is {emb}, expected ({text_cfg['vocab_size']}, {text_cfg['hidden_size']})")
    layers = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.", k))}
    if len(layers) < text_cfg["num_hidden_layers"]:
        raise fail(f"its text encoder has {len(layers)} layers, at least {text_cfg['num_hidden_layers']} are needed")
    return shapes


def _check_folder(folder: Path, configs: dict[str, dict]) -> None:
    for sub in ("unet", "vae", "text_encoder"):
        if not (folder / sub / "config.json").is_file():
            raise WeightsNotFoundError(
                f"'{folder}' is not a complete diffusers SD-Turbo folder: '{sub}/config.json' is missing "
                "(expected unet/, vae/ and text_encoder/ with config.json and *.safetensors each)"
            )
        if not list((folder / sub).glob("*.safetensors")):
            raise WeightsNotFoundError(
                f"no safetensors weights in '{folder / sub}' (only .safetensors are loaded; convert .bin files)"
            )
    theirs = load_configs(folder)
    for sub, keys in (("unet", ("cross_attention_dim", "in_channels", "out_channels", "block_out_channels")),
                      ("vae", ("latent_channels", "block_out_channels")),
                      ("text_encoder", ("hidden_size", "vocab_size"))):
        for k in keys:
            if theirs[sub].get(k) != configs[sub].get(k):
                family = {768: " (SD 1.x)", 2048: " (SDXL)"}.get(theirs["unet"].get("cross_attention_dim"), "")
                raise ArchitectureMismatchError(
                    f"'{folder}' holds a different model{family}: {sub} {k} is {theirs[sub].get(k)!r}, "
                    f"expected {configs[sub].get(k)!r} (an SD 2.1-architecture model such as SD-Turbo)"
                )


# ---------------------------------------------------------------------------------------- text encoder
def _new_text_encoder(text_cfg: dict) -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**{k: v for k, v in text_cfg.items() if k != "architectures"}))


def convert_open_clip_text_encoder(checkpoint: dict[str, torch.Tensor], num_layers: int,
                                   prefix: str = OPENCLIP_PREFIXES[0], target_prefix: str = "text_model.") -> dict[str, torch.Tensor]:
    """OpenCLIP text-tower weights (LDM layout) -> transformers ``CLIPTextModel`` state dict.

    Keeps the first ``num_layers`` transformer blocks (23 of 24 for SD 2.x: the penultimate layer).
    ``target_prefix``: ``"text_model."`` (transformers 4) or ``""`` (transformers 5 drops it).
    """
    t = target_prefix
    sd = {
        f"{t}embeddings.token_embedding.weight": checkpoint[f"{prefix}token_embedding.weight"],
        f"{t}embeddings.position_embedding.weight": checkpoint[f"{prefix}positional_embedding"],
        f"{t}final_layer_norm.weight": checkpoint[f"{prefix}ln_final.weight"],
        f"{t}final_layer_norm.bias": checkpoint[f"{prefix}ln_final.bias"],
    }
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
             "attn.out_proj": "self_attn.out_proj"}
    for i in range(num_layers):
        src, dst = f"{prefix}transformer.resblocks.{i}.", f"{t}encoder.layers.{i}."
        for old, new in names.items():
            for p in ("weight", "bias"):
                sd[f"{dst}{new}.{p}"] = checkpoint[f"{src}{old}.{p}"]
        for p in ("weight", "bias"):
            q, k, v = checkpoint[f"{src}attn.in_proj_{p}"].chunk(3, dim=0)
            sd[f"{dst}self_attn.q_proj.{p}"], sd[f"{dst}self_attn.k_proj.{p}"], sd[f"{dst}self_attn.v_proj.{p}"] = q, k, v
    return sd


def load_text_encoder(checkpoint: dict[str, torch.Tensor], text_cfg: dict, path: Path) -> nn.Module:
    """Build the ``CLIPTextModel`` of ``text_cfg`` from an LDM-layout checkpoint dict."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = _new_text_encoder(text_cfg)
    try:
        target = "text_model." if any(k.startswith("text_model.") for k in model.state_dict()) else ""
        sd = convert_open_clip_text_encoder(checkpoint, text_cfg["num_hidden_layers"],
                                            prefix=open_clip_prefix(checkpoint) or OPENCLIP_PREFIXES[0],
                                            target_prefix=target)
        result = model.load_state_dict(sd, strict=False, assign=True)
    except (KeyError, RuntimeError) as exc:
        raise ArchitectureMismatchError(f"'{path}': the OpenCLIP text encoder does not fit the SD 2.1 layout ({exc})") from exc
    missing = [k for k in result.missing_keys if "position_ids" not in k]
    if missing:
        raise ArchitectureMismatchError(f"'{path}': text encoder weights missing: {missing[:3]}")
    return model.eval().requires_grad_(False)


@torch.no_grad()
def encode_prompts(text_encoder: nn.Module, prompts: list[str]) -> torch.Tensor:
    """Prompts -> context embeddings ``(len(prompts), 77, D)`` float32 with open_clip's tokenizer (offline)."""
    from open_clip.tokenizer import tokenize  # BPE vocab ships inside the open-clip-torch wheel

    ids = tokenize(prompts, context_length=CONTEXT_LENGTH)  # n, 77 (SOT ... EOT, zero padding)
    device = next(text_encoder.parameters()).device
    return text_encoder(input_ids=ids.to(device)).last_hidden_state.float()


# ---------------------------------------------------------------------------------------- loading
def _meta_params(module: nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.is_meta]


def load_sd_components(path: str | Path, *, config_dir: str | Path = SD_TURBO_CONFIG_DIR,
                       dtype: torch.dtype = torch.float32, with_text_encoder: bool = True) -> SDComponents:
    """Load UNet, VAE (as :class:`VAECodec`) and text encoder from a single file or a diffusers folder, offline."""
    path, config_dir = Path(path), Path(config_dir)
    configs = load_configs(config_dir)
    if not path.exists():
        raise WeightsNotFoundError(
            f"SD-Turbo weights not found at '{path}'. Put the single-file checkpoint (e.g. sd_turbo.safetensors "
            "from stabilityai/sd-turbo) or its diffusers folder there, or pass the right path."
        )
    if path.is_dir():
        _check_folder(path, configs)
        kw = dict(local_files_only=True, use_safetensors=True, torch_dtype=dtype)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kw)
        vae = VAECodec.from_pretrained(path, subfolder="vae", **kw)
        text_encoder = None
        if with_text_encoder:
            from transformers import CLIPTextModel

            text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", **kw).eval()
        return SDComponents(unet.eval(), vae.eval(), text_encoder, config_dir)

    check_single_file(path, configs)
    checkpoint = load_file(str(path))  # safetensors: no code execution
    kw = dict(config=str(config_dir), local_files_only=True, torch_dtype=None if dtype == torch.float32 else dtype)
    try:
        unet = UNet2DConditionModel.from_single_file(checkpoint, subfolder="unet", **kw)
        vae = VAECodec.from_single_file(checkpoint, subfolder="vae", **kw)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ArchitectureMismatchError(f"'{path}' does not fit the SD 2.1 architecture of '{config_dir}': {exc}") from exc
    for name, module in (("UNet", unet), ("VAE", vae)):
        if _meta_params(module):
            raise ArchitectureMismatchError(
                f"'{path}': the {name} lacks weights for {_meta_params(module)[:3]} (incomplete or different checkpoint)"
            )
    text_encoder = load_text_encoder(checkpoint, configs["text_encoder"], path).to(dtype) if with_text_encoder else None
    del checkpoint
    return SDComponents(unet.eval(), vae.eval(), text_encoder, config_dir)


def restorer_from_components(
    components: SDComponents,
    *,
    mapnet: nn.Module | None = None,
    prompt_embeds: torch.Tensor | None = None,
    positive_prompt: str = POSITIVE_PROMPT,
    negative_prompt: str = NEGATIVE_PROMPT,
    prediction_type: str = "epsilon",
    cfg_scale: float = DEFAULT_CFG_SCALE,
    unet_lora_rank: int | None = 32,
    vae_lora_rank: int | None = 16,
) -> OneStepRestorer:
    """Wrap SD components into an :class:`OneStepRestorer` (prompt embeddings computed once, then cached)."""
    if prompt_embeds is None:
        if components.text_encoder is None:
            raise ValueError("prompt_embeds is required when the components have no text encoder")
        prompt_embeds = encode_prompts(components.text_encoder, [positive_prompt, negative_prompt])
    scheduler_config = components.scheduler_config()
    return OneStepRestorer(
        components.unet, components.vae, prompt_embeds.to(components.unet.dtype), mapnet=mapnet,
        prediction_type=prediction_type, cfg_scale=cfg_scale, scheduler_config=scheduler_config,
        unet_lora_rank=unet_lora_rank, vae_lora_rank=vae_lora_rank, backend="sd_turbo",
    )


def load_sd_turbo(
    path: str | Path,
    *,
    config_dir: str | Path = SD_TURBO_CONFIG_DIR,
    mapnet: nn.Module | None = None,
    prediction_type: str = "epsilon",
    cfg_scale: float = DEFAULT_CFG_SCALE,
    unet_lora_rank: int | None = 32,
    vae_lora_rank: int | None = 16,
    positive_prompt: str = POSITIVE_PROMPT,
    negative_prompt: str = NEGATIVE_PROMPT,
    dtype: torch.dtype = torch.float32,
) -> OneStepRestorer:
    """SD-Turbo (single ``.safetensors`` file or diffusers folder) -> :class:`OneStepRestorer`, offline.

    The text encoder encodes the two prompts once and is then released. LoRA (ranks 32/16 by default)
    is added with zero-initialised B, so the result equals plain SD-Turbo until an adapter is loaded.
    Raises :class:`WeightsNotFoundError` (missing path) or :class:`ArchitectureMismatchError` (not SD 2.1).
    """
    components = load_sd_components(path, config_dir=config_dir, dtype=dtype)
    restorer = restorer_from_components(
        components, mapnet=mapnet, positive_prompt=positive_prompt, negative_prompt=negative_prompt,
        prediction_type=prediction_type, cfg_scale=cfg_scale, unet_lora_rank=unet_lora_rank,
        vae_lora_rank=vae_lora_rank,
    )
    components.text_encoder = None
    log.info("loaded SD-Turbo from %s", path)
    return restorer


# ---------------------------------------------------------------------------------------- random models
def tiny_sd_configs(cross_attention_dim: int = 1024) -> dict[str, dict]:
    """Configs of a tiny SD-2.1-shaped model (same block types and layout, few channels, 1 text layer)."""
    unet = json.loads((SD_TURBO_CONFIG_DIR / "unet" / "config.json").read_text())
    unet.update(block_out_channels=[32, 64], layers_per_block=1, attention_head_dim=[2, 4], norm_num_groups=8,
                down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=cross_attention_dim,
                sample_size=32)
    vae = json.loads((SD_TURBO_CONFIG_DIR / "vae" / "config.json").read_text())
    vae.update(block_out_channels=[32, 64], layers_per_block=1, norm_num_groups=8, sample_size=64,
               down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    text = json.loads((SD_TURBO_CONFIG_DIR / "text_encoder" / "config.json").read_text())
    heads = 4 if cross_attention_dim % 4 == 0 else 1
    text.update(hidden_size=cross_attention_dim, intermediate_size=2 * cross_attention_dim,
                num_attention_heads=heads, num_hidden_layers=1, projection_dim=cross_attention_dim)
    return {"unet": unet, "vae": vae, "text_encoder": text}


def write_config_dir(configs: dict[str, dict], folder: str | Path) -> Path:
    """Write ``configs`` as a config folder usable as ``config_dir`` (adds the bundled scheduler config)."""
    folder = Path(folder)
    for sub, cfg in configs.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / "config.json").write_text(json.dumps(cfg, indent=1))
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        (SD_TURBO_CONFIG_DIR / "scheduler" / "scheduler_config.json").read_text())
    return folder


def build_tiny_sd_like(config_dir: str | Path | None = None, *, cross_attention_dim: int = 1024, seed: int = 0,
                       with_text_encoder: bool = True) -> SDComponents:
    """Random tiny SD-2.1-shaped UNet + VAE (+ 1-layer CLIPTextModel with the real 49408-token vocabulary).

    With ``config_dir``, its configs are written there (usable as ``config_dir`` of :func:`load_sd_turbo`).
    """
    configs = tiny_sd_configs(cross_attention_dim)
    config_dir = SD_TURBO_CONFIG_DIR if config_dir is None else write_config_dir(configs, config_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = VAECodec.from_config(configs["vae"])
        text_encoder = _new_text_encoder(configs["text_encoder"]).eval() if with_text_encoder else None
    return SDComponents(unet.eval(), vae.eval(), text_encoder, config_dir)


def build_sd21_random(*, seed: int = 0, mapnet: nn.Module | None = None, unet_lora_rank: int | None = 32,
                      vae_lora_rank: int | None = 16, cfg_scale: float = DEFAULT_CFG_SCALE) -> OneStepRestorer:
    """Full SD 2.1-size UNet + VAE with random weights and random prompt embeddings (benchmarks only)."""
    configs = load_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = VAECodec.from_config(configs["vae"])
        prompts = torch.randn(2, CONTEXT_LENGTH, configs["unet"]["cross_attention_dim"])
    components = SDComponents(unet.eval(), vae.eval(), None)
    return restorer_from_components(components, mapnet=mapnet, prompt_embeds=prompts, cfg_scale=cfg_scale,
                                    unet_lora_rank=unet_lora_rank, vae_lora_rank=vae_lora_rank)


__all__ = [
    "SDComponents",
    "load_configs",
    "read_header",
    "describe_checkpoint",
    "check_single_file",
    "open_clip_prefix",
    "convert_open_clip_text_encoder",
    "encode_prompts",
    "load_sd_components",
    "restorer_from_components",
    "load_sd_turbo",
    "tiny_sd_configs",
    "write_config_dir",
    "build_tiny_sd_like",
    "build_sd21_random",
]
