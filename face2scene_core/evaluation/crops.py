"""Held-out evaluation of a trained restorer: PSNR / SSIM of the output, of the degraded input, and the
effect of the degradation tokens, with 95% confidence intervals over images.

    python -m face2scene_core.evaluation.crops --adapter face2scene_core/weights/restorer.safetensors \
        [--ablation runs/restorer_notokens/final.safetensors] --out docs/results/restorer

Samples come from :class:`~face2scene_core.training.data.Stage2Data` on the *held-out* scenes of
``configs/split.json`` (Kodak24, CSet5) with held-out FFHQ faces (00080-00099) as the face pool: each scene crop
and its face pair are degraded by one shared Real-ESRGAN operator, exactly as in training, from a fixed seed.
Rows: ``input`` (the degraded image itself: the identity baseline; the pipeline keeps the input size, so
bicubic resizing back is already part of the degradation), ``restored`` (tokens from FaDeX on the face pair),
``restored_no_tokens`` (the same model with ``tokens=None``), and ``ablation`` (a model trained without tokens,
when given). PSNR and SSIM on the Y channel.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..imageio import write_bytes_atomic
from .metrics import mean_ci, psnr, ssim

log = logging.getLogger(__name__)

HELDOUT_SCENES = ["../shared/datasets/scenes_clean/ffdnet/testsets/Kodak24/*",
                  "../shared/datasets/scenes_clean/denoising_datasets/CSet5/*"]
HELDOUT_FACES = ["../shared/datasets/faces_ffhq/daps_test/dataset/demo-ffhq/000[89]?.png"]


def _u8(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy().transpose(1, 2, 0)
    return (np.clip(x, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()


@torch.no_grad()
def evaluate_restorer(adapter: str, *, fadex: str | None = None, ablation: str | None = None, n_samples: int = 58,
                      crop: int = 256, seed: int = 1234, out: str | Path | None = None, figure_rows: int = 0) -> dict:
    """Evaluate ``adapter`` (and optionally an ablation adapter) on held-out samples; returns the summary.

    With ``out``, writes ``restorer_eval.json`` and ``restorer_eval.png`` (per-sample PSNR gains and the
    paired token gain); with ``figure_rows > 0`` also ``crops.png``: that many samples (spread evenly)
    as rows of input | without tokens | restored | ground truth, each labelled with its PSNR.
    """
    from ..restorer.loading import restorer_from_adapter
    from ..training.data import Stage2Data, Stage2DataConfig
    from ..training.stage2 import load_fadex

    cfg = Stage2DataConfig(scenes=HELDOUT_SCENES, face_pool=HELDOUT_FACES, split_file=None, crop_sizes=[crop],
                           scale_range=(0.6, 1.0), max_face=160)
    data = Stage2Data(cfg, batch_size=1, seed=seed)
    model = restorer_from_adapter(adapter).eval()
    abl = restorer_from_adapter(ablation).eval() if ablation else None
    enc = load_fadex(fadex).eval()
    rows = {k: {"psnr": [], "ssim": []} for k in ("input", "restored", "restored_no_tokens", "ablation")}
    pick = set(np.linspace(0, n_samples - 1, figure_rows).round().astype(int).tolist()) if figure_rows > 0 else set()
    strips = []
    for k in range(n_samples):
        s = data.sample(k, crop)
        gt = _u8(s.hq)
        feats = enc(_t(s.face_lq), _t(s.face_hq)).features
        tokens = model.tokens_from_features(feats)
        outs = {"input": _u8(s.lq), "restored": _u8(model.restore(_t(s.lq), tokens, progress=False)[0]),
                "restored_no_tokens": _u8(model.restore(_t(s.lq), None, progress=False)[0])}
        if abl is not None:
            outs["ablation"] = _u8(abl.restore(_t(s.lq), None, progress=False)[0])
        for name, img in outs.items():
            rows[name]["psnr"].append(psnr(img, gt))
            rows[name]["ssim"].append(ssim(img, gt))
        if k in pick:
            other = "ablation" if abl is not None else "restored_no_tokens"
            strips.append(_strip([(outs["input"], "input"), (outs[other], "no tokens" if abl is None else "ablation"),
                                  (outs["restored"], "restored"), (gt, "ground truth")], gt))
    summary: dict = {"n": n_samples, "crop": crop, "seed": seed, "channel": "y", "adapter": adapter,
                     "ablation": ablation, "metrics": {}}
    for name, m in rows.items():
        if m["psnr"]:
            summary["metrics"][name] = {"psnr": mean_ci(m["psnr"]), "ssim": mean_ci(m["ssim"])}
    base = np.array(rows["restored_no_tokens"]["psnr"] if abl is None else rows["ablation"]["psnr"])
    summary["token_gain_psnr"] = mean_ci(np.array(rows["restored"]["psnr"]) - base)
    summary["token_gain_vs"] = "ablation model" if abl is not None else "same model with tokens=None"
    summary["gain_over_input_psnr"] = mean_ci(np.array(rows["restored"]["psnr"]) - np.array(rows["input"]["psnr"]))
    if out is not None:
        write_bytes_atomic(Path(out) / "restorer_eval.json", json.dumps(summary, indent=2).encode())
        _plot(Path(out) / "restorer_eval.png", rows, summary)
        if strips:
            from ..imageio import save_image

            save_image(Path(out) / "crops.png", np.concatenate(strips, axis=0))
    return summary


def _strip(images: list[tuple[np.ndarray, str]], gt: np.ndarray) -> np.ndarray:
    """One figure row: the images side by side, each captioned with its name and PSNR (Y) to ``gt``."""
    import cv2

    tiles = []
    for img, name in images:
        tile = np.ascontiguousarray(img.copy())
        label = name if img is gt else f"{name} {psnr(img, gt):.2f} dB"
        for color, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(tile, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, thick, cv2.LINE_AA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def _plot(path: Path, rows: dict, summary: dict) -> None:
    """Per-sample PSNR gain over the input (restored vs. the no-token row) and the paired token gain."""
    import os

    from matplotlib.figure import Figure

    base_name = "ablation" if rows["ablation"]["psnr"] else "restored_no_tokens"
    inp = np.array(rows["input"]["psnr"])
    full = np.array(rows["restored"]["psnr"]) - inp
    base = np.array(rows[base_name]["psnr"]) - inp
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    lim = [min(full.min(), base.min()) - 0.2, max(full.max(), base.max()) + 0.2]
    ax1.scatter(base, full, s=12)
    ax1.plot(lim, lim, "k--", lw=0.8)
    ax1.set_xlim(lim)
    ax1.set_ylim(lim)
    ax1.set_xlabel(f"PSNR gain over input, {base_name.replace('_', ' ')} (dB)")
    ax1.set_ylabel("PSNR gain over input, with FaDeX tokens (dB)")
    ax1.set_title(f"{len(inp)} held-out samples (above the line: tokens help)", fontsize=9)
    g = summary["token_gain_psnr"]
    ax2.hist(full - base, bins=20, color="tab:green", alpha=0.8)
    ax2.axvline(0, color="k", lw=0.8)
    ax2.axvline(g["mean"], color="tab:red", lw=1.2)
    ax2.set_xlabel(f"token gain vs {summary['token_gain_vs']} (dB)")
    ax2.set_title(f"mean {g['mean']:+.3f} dB, 95% CI [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter", required=True)
    p.add_argument("--fadex", default=None, help="FaDeX folder (default: the embedded one)")
    p.add_argument("--ablation", default=None, help="adapter of a model trained without degradation tokens")
    p.add_argument("--n", type=int, default=58)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", default=None)
    p.add_argument("--figure-rows", type=int, default=0, help="with --out: write crops.png with this many samples")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    r = evaluate_restorer(a.adapter, fadex=a.fadex, ablation=a.ablation, n_samples=a.n, crop=a.crop, seed=a.seed,
                          out=a.out, figure_rows=a.figure_rows)
    for name, m in r["metrics"].items():
        print(f"{name:20} PSNR {m['psnr']['mean']:.2f} dB [{m['psnr']['ci95'][0]:.2f}, {m['psnr']['ci95'][1]:.2f}]"
              f"  SSIM {m['ssim']['mean']:.4f}")
    g = r["token_gain_psnr"]
    print(f"token gain vs {r['token_gain_vs']}: {g['mean']:+.3f} dB [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]")
    g = r["gain_over_input_psnr"]
    print(f"gain over input: {g['mean']:+.3f} dB [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
