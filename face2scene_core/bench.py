"""``face2scene bench``: per-stage time and peak memory of the whole pipeline.

Each (model, size) runs in a fresh subprocess, so the peak resident memory it reports (``ru_maxrss``; on CUDA
also ``torch.cuda.max_memory_allocated``) belongs to that run alone. The photo is the shipped example
(``example_inputs/astronaut_lq.png``, a real degraded photo with a face) resized to ``size x size``; the reference is
the shipped reference photo. Stages: detect, references (detect + align + embed the references), identity
(face choice), align, reffr, fadex, mapnet, encode / unet / decode (the restorer's codec and one UNet step),
restore (encode + unet + decode + colour fix), and total.

Models:
    embedded  the CPU model shipped in ``face2scene_core/weights`` (FaDeX + small UNet, pixel-unshuffle latent)
    tiny      a tiny SD-2.1-shaped UNet + x8 VAE with random weights (cross-attention 1024, LoRA as SD-Turbo)
    sd21      the real SD 2.1-size UNet + VAE architecture with random weights (``--sd21``; slow, ~6 GB)
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example_inputs" / "astronaut_lq.png"
EXAMPLE_REF = ROOT / "example_inputs" / "refs" / "astronaut_ref.png"
STAGES = ("detect", "references", "identity", "align", "reffr", "fadex", "mapnet", "encode", "unet", "decode",
          "restore")


def _example_photo(size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    import cv2

    from .imageio import load_image

    if not EXAMPLE.is_file():
        raise FileNotFoundError(f"the benchmark photo '{EXAMPLE}' is missing (it ships with the repository)")
    photo = load_image(EXAMPLE)
    interp = cv2.INTER_CUBIC if size > photo.shape[0] else cv2.INTER_AREA
    photo = cv2.resize(photo, (size, size), interpolation=interp)
    return photo, [load_image(EXAMPLE_REF)]


def _build(model: str):
    import torch

    from .fadex.model import FaDeX
    from .mapnet.model import MapNet
    from .pipeline import EMBEDDED_DIR, Face2ScenePipeline

    if model == "embedded":
        return Face2ScenePipeline.from_paths(device="auto")
    from .restorer.sd_turbo import build_sd21_random, build_tiny_sd_like, restorer_from_components

    fadex_dir = EMBEDDED_DIR / "fadex"
    fadex = FaDeX.from_pretrained(str(fadex_dir)) if (fadex_dir / "config.json").is_file() else FaDeX()
    mapnet = MapNet(in_channels=fadex.feature_channels, token_dim=1024)
    if model == "tiny":
        # the tests' tiny SD-shaped UNet, with a x8 VAE like SD's (the tests' tiny VAE is x2), random weights
        from .restorer.codecs import VAECodec
        from .restorer.sd_turbo import SDComponents, tiny_sd_configs

        vae_cfg = dict(tiny_sd_configs()["vae"], block_out_channels=[32, 64, 64, 64],
                       down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
        comps = build_tiny_sd_like(with_text_encoder=False)
        comps = SDComponents(comps.unet, VAECodec.from_config(vae_cfg).eval(), None)
        restorer = restorer_from_components(comps, mapnet=mapnet, prompt_embeds=torch.randn(2, 77, 1024))
    elif model == "sd21":
        restorer = build_sd21_random(mapnet=mapnet)
    else:
        raise ValueError(f"model must be embedded, tiny or sd21, got {model!r}")
    return Face2ScenePipeline(fadex=fadex, restorer=restorer, device="auto")


def conv_throughput(channels: int = 64, side: int = 256, repeats: int = 20) -> float:
    """This machine's fp32 3x3 convolution rate in GFLOP/s (channels-last, batch 1, ``channels`` in and out at
    ``side`` x ``side``, best of ``repeats``): the yardstick of the restorer's achieved rate."""
    import torch

    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, channels, side, side).to(memory_format=torch.channels_last)
    flops = 2.0 * channels * channels * 9 * side * side
    best = float("inf")
    with torch.no_grad():
        conv(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def restorer_flops(pipe, h: int, w: int) -> float | None:
    """FLOPs of one restorer network pass on an ``h x w`` photo (padded to the model's multiple), or None when the
    network's cost is not known in closed form (the diffusers UNet)."""
    from .restorer.film_net import FiLMUNet, flops_per_pixel

    net, r = pipe.restorer.unet, pipe.restorer
    if not isinstance(net, FiLMUNet):
        return None
    m = r.multiple
    return flops_per_pixel(net, downscale=r.codec.downscale) * (-(-h // m) * m) * (-(-w // m) * m)


def run_one(model: str, size: int, repeats: int = 1) -> dict:
    """Time one (model, size) in this process; returns per-stage seconds (best of ``repeats``) and peak memory."""
    import torch

    photo, refs = _example_photo(size)
    t0 = time.perf_counter()
    pipe = _build(model)
    pipe.detector, pipe.embedder, pipe.reffr  # lazy models load here, so the stage timings exclude loading
    build_s = time.perf_counter() - t0
    from .restorer.film_net import FiLMUNet

    film = isinstance(pipe.restorer.unet, FiLMUNet)
    # the FiLM restorer runs with the tiling a user gets (None = auto tiles above large_photo.AUTO_TILE_ABOVE);
    # the attention UNets need small tiles to stay within memory
    tile = None if film else (512 if size > 1024 else None)
    best: dict[str, float] = {}
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = pipe(photo, refs, tile_size=tile)
        total = time.perf_counter() - t0
        timings = dict(out.report["timings_s"], total=total)
        best = timings if not best or total < best["total"] else best
        tile = out.report.get("tile_px", tile)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {"model": model, "size": size, "tile": tile, "device": str(pipe.device), "build_s": round(build_s, 3),
              "seconds": {k: round(v, 4) for k, v in best.items()}, "peak_rss_mb": round(peak_mb, 1),
              "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    flops = restorer_flops(pipe, size, size)
    if flops is not None and best.get("unet"):
        machine = conv_throughput()
        achieved = flops / best["unet"] / 1e9  # tiles recompute their overlaps: counted as lost throughput
        result.update({"restorer_gflop": round(flops / 1e9, 2), "restorer_gflops": round(achieved, 1),
                       "machine_conv_gflops": round(machine, 1), "efficiency": round(achieved / machine, 3),
                       "s_per_mp_restorer": round(best["unet"] / (size * size / 1e6), 3)})
    return result


def _format(rows: list[dict]) -> str:
    cols = [s for s in STAGES + ("total",) if any(s in r.get("seconds", {}) for r in rows)]
    head = f"{'model':9} {'size':>5} " + " ".join(f"{c:>10}" for c in cols) + f" {'peak MB':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:9} {r['size']:>5} error: {r['error']}")
            continue
        cells = " ".join(f"{r['seconds'].get(c, float('nan')):>10.3f}" for c in cols)
        lines.append(f"{r['model']:9} {r['size']:>5} {cells} {r['peak_rss_mb']:>9.0f}")
        if "efficiency" in r:
            lines.append(f"{'':15} restorer {r['restorer_gflop']:.1f} GFLOP at {r['restorer_gflops']:.1f} GFLOP/s = "
                         f"{r['efficiency']:.0%} of this machine's fp32 3x3 conv ({r['machine_conv_gflops']:.1f} GFLOP/s); "
                         f"{r['s_per_mp_restorer']:.2f} s per megapixel")
    return "\n".join(lines)


def run_bench(*, sizes: list[int], sd21: bool = False, repeats: int = 1, models: list[str] | None = None) -> list[dict]:
    """Run every (model, size) in its own subprocess, print a table (seconds per stage), return the rows."""
    from .pipeline import EMBEDDED_DIR

    if models is None:
        models = (["embedded"] if (EMBEDDED_DIR / "restorer.safetensors").is_file() else []) + ["tiny"]
        if sd21:
            models.append("sd21")
    rows = []
    for model in models:
        for size in sizes:
            cmd = [sys.executable, "-m", "face2scene_core.bench", model, str(size), str(repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                rows.append({"model": model, "size": size, "error": err})
            else:
                rows.append(json.loads(lines[-1]))
            print(_format(rows[-1:]) if len(rows) == 1 else _format(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(_format(rows))
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    name, sz, rep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1
    print(json.dumps(run_one(name, sz, rep)))
