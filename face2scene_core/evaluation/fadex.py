"""Does FaDeX encode the degradation rather than the face? (paper Fig. 3 analysis + retrieval)

    results = evaluate_fadex(model, image_paths, "runs/fadex/eval")

For ``N`` clean faces and ``P`` degradation operators (the presets D1..D4, and separately
``n_random_ops`` random Real-ESRGAN operators), every face is degraded by every operator and the
(LQ, clean) pair is embedded. From the ``N*P`` unit embeddings:

* ``same_degradation_different_image``: mean cosine of pairs (i, p), (j, p) with i != j (should be high);
* ``same_image_different_degradation``: mean cosine of pairs (i, p), (i, q) with p != q (should be low);
* ``gap``: the first minus the second;
* ``matrix`` (P x P): mean cosine between operators p and q over *different* images only, so the
  face content cannot contribute;
* ``top1_accuracy``: for each sample, is its nearest other sample (cosine) degraded by the same
  operator? (``top1_per_operator``: the same, per operator) ``chance_top1`` is what random embeddings would score, ``nearest_is_same_image`` the
  rate of the failure mode "nearest = same face, other degradation".

Writes ``fadex_eval.json`` (the returned dict) and ``fadex_eval.png`` (preset heatmap and
similarity histograms) into ``out_dir``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..imageio import to_float, to_uint8, write_bytes_atomic
from ..fadex.data import HQFn, load_face_images, with_noise_seed
from ..fadex.model import FaDeX

logger = logging.getLogger(__name__)

JSON_NAME = "fadex_eval.json"
PNG_NAME = "fadex_eval.png"


def _centre_crop(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    return np.ascontiguousarray(img[top : top + min(h, max_side), left : left + min(w, max_side)])


@torch.no_grad()
def embed_operators(model: FaDeX, images: Sequence[np.ndarray], ops: Sequence[Any], degradation: Any,
                    hq_fn: HQFn | None = None, noise_rng: np.random.Generator | None = None) -> np.ndarray:
    """Embeddings ``float32 (N, P, D)`` of every image degraded by every operator (model in eval mode).

    The HQ side is the clean image (or ``hq_fn(lq, clean)``); each image's ``P`` pairs form one batch.
    With ``noise_rng``, every (image, operator) gets its own ``noise_seed`` drawn from it, so that
    same-operator pairs do not share an identical noise pattern.
    """
    was_training = model.training
    model.eval()
    try:
        out = []
        for img in images:
            ops_i = [op if noise_rng is None else with_noise_seed(op, noise_rng) for op in ops]
            lqs = [to_uint8(degradation.apply(to_float(img), op)) for op in ops_i]
            hqs = [img if hq_fn is None else np.asarray(hq_fn(lq, img)) for lq in lqs]

            def t(arrs: list[np.ndarray]) -> torch.Tensor:
                x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
                return x.to(device=model.device, dtype=model.dtype) / 255.0

            out.append(model(t(lqs), t(hqs)).embedding.float().cpu().numpy())
        return np.stack(out)
    finally:
        model.train(was_training)


def similarity_stats(emb: np.ndarray) -> dict[str, Any]:
    """The Fig. 3 statistics and top-1 operator retrieval of embeddings ``(N, P, D)`` (see module doc)."""
    n, p, _ = emb.shape
    if n < 2 or p < 2:
        raise ValueError(f"need at least 2 images and 2 operators, got {n} images x {p} operators")
    flat = emb.reshape(n * p, -1).astype(np.float64)
    sim = flat @ flat.T  # np, np  (row index = image * p + op)
    img_id = np.repeat(np.arange(n), p)
    op_id = np.tile(np.arange(p), n)
    same_img = img_id[:, None] == img_id[None, :]
    same_op = op_id[:, None] == op_id[None, :]
    sim4 = sim.reshape(n, p, n, p)
    diff_img = ~np.eye(n, dtype=bool)
    matrix = np.array([[sim4[:, a, :, b][diff_img].mean() for b in range(p)] for a in range(p)])
    nn_sim = sim.copy()
    np.fill_diagonal(nn_sim, -np.inf)
    nearest = nn_sim.argmax(axis=1)
    sd = float(sim[same_op & ~same_img].mean())
    si = float(sim[same_img & ~same_op].mean())
    return {
        "same_degradation_different_image": sd,
        "same_image_different_degradation": si,
        "gap": sd - si,
        "matrix": matrix.round(6).tolist(),
        "top1_accuracy": float((op_id[nearest] == op_id).mean()),
        "top1_per_operator": [float((op_id[nearest] == op_id)[op_id == q].mean()) for q in range(p)],
        "nearest_is_same_image": float((img_id[nearest] == img_id).mean()),
        "chance_top1": (n - 1) / (n * p - 1),
        "_hist": {"same_degradation_different_image": sim[same_op & ~same_img], "same_image_different_degradation": sim[same_img & ~same_op]},
    }


def _plot(path: Path, sets: dict[str, dict], names: dict[str, list[str]]) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless

    fig = Figure(figsize=(4.6 * (1 + len(sets)), 4.2))
    axes = np.atleast_1d(fig.subplots(1, 1 + len(sets)))
    first = next(iter(sets))
    m = np.asarray(sets[first]["matrix"])
    ax = axes[0]
    im = ax.imshow(m, vmin=-1, vmax=1, cmap="viridis")
    labels = names[first]
    ax.set_xticks(range(len(labels)), labels, rotation=90 if len(labels) > 6 else 0)
    ax.set_yticks(range(len(labels)), labels)
    if len(labels) <= 8:
        for a in range(len(labels)):
            for b in range(len(labels)):
                ax.text(b, a, f"{m[a, b]:.2f}", ha="center", va="center", color="w" if m[a, b] < 0.3 else "k", fontsize=8)
    ax.set_title(f"{first}: mean cosine, different images")
    fig.colorbar(im, ax=ax, fraction=0.046)
    bins = np.linspace(-1, 1, 41)
    for ax, (name, st) in zip(axes[1:], sets.items()):
        for key, color in (("same_degradation_different_image", "tab:green"), ("same_image_different_degradation", "tab:red")):
            ax.hist(st["_hist"][key], bins=bins, alpha=0.6, color=color, density=True, label=key.replace("_", " "))
        ax.set_title(f"{name}: top-1 op retrieval {st['top1_accuracy']:.2f} (chance {st['chance_top1']:.2f})", fontsize=9)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, path)


def evaluate_fadex(
    model: FaDeX,
    images: Sequence[str | os.PathLike | np.ndarray],
    out_dir: str | os.PathLike,
    presets: Mapping[str, Any] | None = None,
    n_random_ops: int = 8,
    seed: int = 0,
    *,
    max_side: int = 256,
    degradation: Any = None,
    hq_fn: HQFn | None = None,
) -> dict[str, Any]:
    """Run the degradation-vs-content analysis and operator retrieval; write JSON + PNG.

    Args:
        model: a FaDeX (any mode; evaluated in eval mode, its mode is restored).
        images: at least 2 clean faces (paths or ``uint8 (H, W, 3)``), each at least 32 px; larger
            ones are centre-cropped to ``max_side`` (never resized).
        out_dir: folder for ``fadex_eval.json`` and ``fadex_eval.png``.
        presets: ``{name: DegradationParams}``; default the paper's D1..D4. ``{}`` skips them.
        n_random_ops: random Real-ESRGAN operators (0 skips them; else >= 2), drawn from ``seed``.
        seed: seed of the random operators.
        max_side: largest side kept per image.
        degradation: object with ``apply(float_img, params)`` and ``sample(rng)``; default
            ``RealESRGANDegradation(DegradationConfig())``.
        hq_fn: optional Ref-FR ``hq_fn(lq_uint8, gt_uint8) -> hq_uint8``; default HQ = clean image.

    Returns:
        ``{"n_images", "image_names", "seed", "presets": {...}, "random": {...}, "summary": {...}}``
        where each operator set holds ``names``, the statistics of :func:`similarity_stats` and
        ``summary`` the headline numbers.
    """
    if n_random_ops < 0 or n_random_ops == 1:
        raise ValueError(f"n_random_ops must be 0 or >= 2, got {n_random_ops}")
    if max_side < 32:
        raise ValueError(f"max_side must be >= 32, got {max_side}")
    if degradation is None or presets is None:
        from ..degradation import PRESETS, DegradationConfig, RealESRGANDegradation

        degradation = RealESRGANDegradation(DegradationConfig()) if degradation is None else degradation
        presets = PRESETS if presets is None else presets
    if len(presets) == 1:
        raise ValueError("presets needs 0 or at least 2 operators")
    if not presets and not n_random_ops:
        raise ValueError("nothing to evaluate: no presets and n_random_ops=0")
    imgs, names = load_face_images(images, 32)
    if len(imgs) < 2:
        raise ValueError(f"evaluate_fadex needs at least 2 usable images, got {len(imgs)}")
    imgs = [_centre_crop(im, max_side) for im in imgs]

    op_sets: dict[str, tuple[list[str], list[Any]]] = {}
    if presets:
        keys = sorted(presets)
        op_sets["presets"] = (keys, [presets[k] for k in keys])
    if n_random_ops:
        rng = np.random.default_rng([seed, 2])
        op_sets["random"] = ([f"R{i}" for i in range(n_random_ops)], [degradation.sample(rng) for _ in range(n_random_ops)])

    results: dict[str, Any] = {"n_images": len(imgs), "image_names": names, "seed": seed, "max_side": max_side}
    stats: dict[str, dict] = {}
    for set_name, (op_names, ops) in op_sets.items():
        emb = embed_operators(model, imgs, ops, degradation, hq_fn, noise_rng=np.random.default_rng([seed, 3]))
        stats[set_name] = similarity_stats(emb)
        results[set_name] = {"names": op_names, **{k: v for k, v in stats[set_name].items() if not k.startswith("_")}}
        logger.info("%s: gap %.3f, top-1 %.3f", set_name, stats[set_name]["gap"], stats[set_name]["top1_accuracy"])
    results["summary"] = {
        f"{s}_{k}": results[s][k] for s in op_sets for k in ("same_degradation_different_image", "same_image_different_degradation", "gap", "top1_accuracy")
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / JSON_NAME, json.dumps(results, indent=1).encode())
    _plot(out / PNG_NAME, stats, {k: v[0] for k, v in op_sets.items()})
    return results


__all__ = ["evaluate_fadex", "embed_operators", "similarity_stats", "JSON_NAME", "PNG_NAME"]
