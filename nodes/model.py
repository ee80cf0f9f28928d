"""The ``FACE2SCENE_MODEL`` object: FaDeX and the one-step restorer under ComfyUI's model management.

Every torch module the pack runs is wrapped in ``comfy.model_patcher.ModelPatcher(model, load_device,
offload_device)`` and brought to the GPU with ``comfy.model_management.load_models_gpu([patcher])`` right
before use, so ComfyUI moves it between GPU and CPU together with everything else (and
``unload_all_models()`` / "free memory" move it off). Modules are held by a plain :class:`Held` container:
current ComfyUI sets bookkeeping attributes such as ``model.device`` on what it manages, which the
diffusers/our own classes expose as read-only properties.

No model is cached on a node or in a global: loaded models live in the :class:`Face2SceneModel` a loader
node returns (ComfyUI keeps it in its output cache while the graph uses it).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_CHOICES = ("auto", "fp16", "bf16", "fp32")


class Held(torch.nn.Module):
    """Plain container around one module, so ComfyUI may set attributes on what it manages.

    ComfyUI logs the class name of what it loads ("Requested to load ..."), so :func:`new_patcher` uses a
    subclass named after the held module (``Face2SceneFaDeX``, ``Face2SceneOneStepRestorer``...).
    """

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


@functools.cache
def _held_class(name: str) -> type:
    return type(f"Face2Scene{name}", (Held,), {"__module__": __name__})


def new_patcher(module: torch.nn.Module):
    """``ModelPatcher`` around ``module`` (moved to ComfyUI's offload device first)."""
    import comfy.model_management as mm
    from comfy.model_patcher import ModelPatcher

    offload = mm.unet_offload_device()
    held = _held_class(type(module).__name__)(module.to(offload).eval())
    return ModelPatcher(held, mm.get_torch_device(), offload)


def load_on_device(patchers: list) -> None:
    """``load_models_gpu(patchers)``, asking for a full load where this ComfyUI supports it (our modules
    are plain torch modules: they cannot run partly offloaded)."""
    import comfy.model_management as mm

    if "force_full_load" in inspect.signature(mm.load_models_gpu).parameters:
        mm.load_models_gpu(patchers, force_full_load=True)
    else:
        mm.load_models_gpu(patchers)


def _on(t: torch.Tensor, device: torch.device) -> bool:
    return t.device.type == device.type and (t.device.index or 0) == (device.index or 0)


def loaded(patcher) -> torch.nn.Module:
    """Load ``patcher`` through ComfyUI and return its module, wholly on ``patcher.load_device``.

    Newer ComfyUI may load a model partly (low VRAM, dynamic VRAM) and leave weights on the offload device for
    its own layers to cast on the fly; our modules are plain torch modules that cannot do that, so whatever is
    not on the load device afterwards is moved there, as core's upscale-model node does with ``.to(device)``.
    """
    load_on_device([patcher])
    module = patcher.model.module
    device = torch.device(patcher.load_device)
    if not all(_on(t, device) for t in (*module.parameters(), *module.buffers())):
        log.info("moving %s wholly to %s (ComfyUI loaded it partly)", type(module).__name__, device)
        module.to(device)
    return module


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``"auto"``: fp32 on CPU; on an accelerator fp16 or bf16 where ComfyUI says it is safe, else fp32."""
    if choice not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {choice!r}")
    if choice != "auto":
        return DTYPES[choice]
    if device.type == "cpu":
        return torch.float32
    import comfy.model_management as mm

    if mm.should_use_fp16(device):
        return torch.float16
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` with floating-point weights in ``dtype`` (untouched when they already are)."""
    if any(p.is_floating_point() and p.dtype != dtype for p in module.parameters()):
        module = module.to(dtype)
    return module


class Face2SceneModel:
    """What the loader node returns (``FACE2SCENE_MODEL``).

    Args:
        fadex: the FaDeX degradation encoder (``face2scene_core.fadex.model.FaDeX``).
        restorer: the one-step restorer (``face2scene_core.restorer.model.OneStepRestorer``, holds MapNet).
        backend: ``"embedded"`` or ``"SD-Turbo"``.
        dtype: weights dtype for both (cast here).
        sources: ``{"fadex": path, "restorer": path, ...}`` for reports.
    """

    def __init__(self, fadex: torch.nn.Module, restorer: torch.nn.Module, *, backend: str, dtype: torch.dtype,
                 sources: dict[str, str]) -> None:
        self.backend = backend
        self.dtype = dtype
        self.sources = dict(sources)
        self.fadex_patcher = new_patcher(_cast(fadex, dtype))
        self.restorer_patcher = new_patcher(_cast(restorer, dtype))
        self._helpers: dict[Any, Any] = {}

    @property
    def patchers(self) -> list:
        return [self.fadex_patcher, self.restorer_patcher]

    @property
    def device(self) -> torch.device:
        """Where the models run (ComfyUI's torch device)."""
        return self.restorer_patcher.load_device

    def fadex(self):
        """FaDeX, loaded on :attr:`device` through ComfyUI's model management."""
        return loaded(self.fadex_patcher)

    def restorer(self):
        """The one-step restorer (with MapNet), loaded on :attr:`device` through ComfyUI."""
        return loaded(self.restorer_patcher)

    def helper(self, key: Any, factory: Callable[[], Any]) -> Any:
        """A non-torch helper (face detector, identity embedder) built once per model object."""
        if key not in self._helpers:
            self._helpers[key] = factory()
        return self._helpers[key]

    def latest(self, slot: str, key: Any, factory: Callable[[], Any]) -> Any:
        """The value last built for ``slot`` if it was built for ``key``, else ``factory()`` (which replaces
        it): e.g. the prepared references, the same for every photo of a gallery."""
        old = self._helpers.get(("latest", slot))
        if old is None or old[0] != key:
            old = (key, factory())
            self._helpers[("latest", slot)] = old
        return old[1]

    def __repr__(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        return f"Face2SceneModel(backend={self.backend!r}, dtype={dtype}, sources={self.sources})"


__all__ = ["DTYPES", "DTYPE_CHOICES", "Face2SceneModel", "Held", "load_on_device", "loaded", "new_patcher",
           "resolve_dtype"]
