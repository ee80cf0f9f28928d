"""Re-fit FaDeX's embedding head on native-scale photo pairs, the encoder left as it is.

    python -m face2scene_core.fadex.head --fadex face2scene_core/weights/fadex \\
        --bank runs/fadex_bank3 runs/fadex_bank3_big --out runs/fadex_head [--steps 2000] [--seed 0] \\
        [--pool-stages 2 --pool-std yes] [--pair-stats yes]

FaDeX has two outputs: the feature map, which MapNet turns into the restorer's tokens, and the embedding
(``head(mean-pooled features)``), which reads the degradation out (operator retrieval, the Fig. 3 gap, the estimate
head, the report). This tool trains the head only, on the photo bank's pairs (:mod:`.photo_bank`: whole train photos
degraded at native scale, faces paired the way the pipeline pairs them), so:

* the feature map is the same to the bit: the restorer, its tokens and every restored photo stay as they were (no
  restorer retraining); only the embedding, and what reads it, changes;
* the head sees each pair's whole stored face crop pooled (not 128 px crops as in the contrastive run), as the
  pipeline pools a native face crop, and three kinds of HQ face: the ground truth, the Ref-FR face from the person's
  references (the pipeline's) and the Ref-FR face made without references, so that the code of an operator is
  the same whichever face the photo got.

What the head reads is FaDeX's ``pool_stages`` / ``pool_std`` (:meth:`FaDeX.encode`): by default the channel means
of the feature map; ``--pool-stages 2 --pool-std yes`` gives it the means and standard deviations of the last two
stages (a new head, started afresh). A new head trains on those pooled features standardised over the bank
(``--standardise``, by default for a new head only); the standardisation is folded into its first layer before saving.
``--pair-stats yes`` adds 14 classic statistics of the pair to what the head reads (:mod:`.pair_stats`: measured
on the degraded face, and against the HQ face); that head starts as the loaded one (the new inputs' weights zero).

The pooled features are computed once per pair and kind (cached per bank folder in
``OUT/bank_features_<folder hash>.safetensors``, keyed by the encoder's id: adding a bank computes only its pairs);
the head then trains in seconds with the multi-positive InfoNCE loss (positives: the pairs of the same operator
group; the clean pairs of every folder share one group). ``--check-part train`` measures operator retrieval across
the 16 train photos that ``face2scene eval-photos --part train`` uses (never in the bank) after every
``--eval-every`` steps, from cached pooled features of those photos' pairs (``OUT/check_features_train.safetensors``):
the same figure as ``face2scene eval-photos --fadex-only --part train`` (``OUT/metrics.jsonl``). The head after the last
step (``--keep best``: the best on those train photos) is saved to ``OUT/final`` (a whole FaDeX folder,
``save_pretrained``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..imageio import write_bytes_atomic
from .moco import multi_positive_info_nce
from .pair_stats import N_PAIR_STATS, combine, face_stats

logger = logging.getLogger(__name__)

HQ_KINDS = ("gt", "reffr", "reffr0")
"""The HQ faces of a bank pair: ground truth, Ref-FR from references, Ref-FR without references."""
CHECK_KINDS = ("gt", "reffr", "reffr_norefs")
"""The keys of ``eval-photos --fadex-only``: GT face, Ref-FR face from references, Ref-FR face without."""


@torch.no_grad()
def pooled_features(fadex, lq: Sequence[np.ndarray], hq: Sequence[np.ndarray], max_side: int = 512) -> torch.Tensor:
    """The head's pooled input ``(N, P)`` (:meth:`FaDeX.encode`) of uint8 face pairs, each centre-cropped to
    ``max_side`` like :meth:`FaDeX.encode_pair` (pairs of one shape run as one batch)."""
    from ..evaluation.fadex import _centre_crop

    fadex.eval()
    out = torch.empty(len(lq), fadex.head[0].in_features)
    by_shape: dict[tuple, list[int]] = {}
    for i, a in enumerate(lq):
        by_shape.setdefault(a.shape, []).append(i)
    for idx in by_shape.values():
        for s in range(0, len(idx), 16):
            part = idx[s:s + 16]
            t = [torch.from_numpy(np.stack([_centre_crop(arr[i], max_side) for i in part])).permute(0, 3, 1, 2)
                 .float() / 255.0 for arr in (lq, hq)]
            x = torch.cat(t, dim=1) * 2.0 - 1.0
            out[part] = fadex.encode(x)[1].float()
    return out


def bank_features(fadex, folders: Sequence[str | Path], cache_dir: Path) -> dict[str, torch.Tensor]:
    """``{"gt"|"reffr"|"reffr0": (N, P) pooled features, "label": (N,)}`` of every pair of the bank folders (labels as
    :class:`~.photo_bank.PhotoBank` gives them). Each folder's features are cached in ``cache_dir`` for this encoder
    (:func:`folder_cache`), so adding a bank computes only the new folder's; a FaDeX with ``pair_stats`` reads the
    cached encoder features of the same pooling and the pair statistics, cached per folder apart (they do not depend
    on the encoder)."""
    from .photo_bank import folder_label

    if fadex.config.pair_stats:
        base = bank_features(with_pool(fadex, fadex.config.pool_stages, fadex.config.pool_std, False), folders, cache_dir)
        stats = [_cached(*stats_cache(folder, cache_dir), lambda f=folder: _bank_stats(f)) for folder in folders]
        return {k: v if k == "label" else torch.cat([v, torch.cat([p[k] for p in stats])], dim=1)
                for k, v in base.items()}
    parts = []
    for b, folder in enumerate(folders):
        path, key = folder_cache(fadex, folder, cache_dir)
        one = _cached(path, key, lambda f=folder: _bank_features(fadex, [f]))
        parts.append({**one, "label": torch.tensor([folder_label(int(v), b) for v in one["label"]], dtype=torch.long)})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def stats_cache(folder: str | Path, cache_dir: Path) -> tuple[Path, str]:
    """Where one bank folder's pair statistics are cached, and the key they are valid for."""
    where = str(Path(folder).resolve())
    key = json.dumps({"pair_stats": N_PAIR_STATS, "folder": where})
    return Path(cache_dir) / f"bank_stats_{hashlib.sha1(where.encode()).hexdigest()[:12]}.safetensors", key


def folder_cache(fadex, folder: str | Path, cache_dir: Path) -> tuple[Path, str]:
    """Where one bank folder's pooled features are cached (``cache_dir/bank_features_<folder hash>.safetensors``) and
    the key they are valid for (the encoder's id, the pooling, the folder)."""
    from ..codes import module_id

    where = str(Path(folder).resolve())
    key = json.dumps({"encoder": module_id(fadex.encoder), "pool": _pool(fadex), "folder": where})
    return Path(cache_dir) / f"bank_features_{hashlib.sha1(where.encode()).hexdigest()[:12]}.safetensors", key


def _pool(fadex) -> list:
    """What the head reads: ``[pool_stages, pool_std]``, then ``True`` with the pair statistics."""
    return [int(fadex.config.pool_stages), bool(fadex.config.pool_std)] + ([True] if fadex.config.pair_stats else [])


def with_pool(fadex, pool_stages: int, pool_std: bool, pair_stats: bool | None = None):
    """``fadex`` itself when it already pools this way; else a FaDeX with the same encoder (bit-identical) and a new
    head that reads ``pool_stages`` stages' means (and standard deviations with ``pool_std``), and the pair statistics
    with ``pair_stats`` (default: as ``fadex``). A head that only gains or loses the statistics starts as ``fadex``'s
    (the statistics' weights zero: at first the same embedding); another pooling starts afresh."""
    from .model import FaDeX

    pair_stats = bool(fadex.config.pair_stats) if pair_stats is None else bool(pair_stats)
    if _pool(fadex) == [pool_stages, pool_std] + ([True] if pair_stats else []):
        return fadex
    config = {k: v for k, v in fadex.config.items() if not k.startswith("_")}  # _use_default_values would win
    new = FaDeX.from_config({**config, "pool_stages": pool_stages, "pool_std": pool_std, "pair_stats": pair_stats})
    new.encoder.load_state_dict(fadex.encoder.state_dict())
    if _pool(fadex)[:2] == [pool_stages, pool_std]:
        with torch.no_grad():
            shared = min(fadex.head[0].in_features, new.head[0].in_features)  # the statistics come last
            new.head[0].weight.zero_()
            new.head[0].weight[:, :shared] = fadex.head[0].weight[:, :shared]
            new.head[0].bias.copy_(fadex.head[0].bias)
            new.head[2].load_state_dict(fadex.head[2].state_dict())
    return new.to(device=fadex.device, dtype=fadex.dtype).train(fadex.training)


def _bank_features(fadex, folders: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    from .photo_bank import bank_shards, folder_label, hq_face

    feats: dict[str, list[torch.Tensor]] = {k: [] for k in HQ_KINDS}
    labels = []
    t0 = time.time()
    for b, t in bank_shards(folders):
        n = len(t["label"])
        lq = [t[f"lq_{k}"] for k in range(n)]
        for kind in HQ_KINDS:
            feats[kind].append(pooled_features(fadex, lq, [hq_face(t, kind, k) for k in range(n)]))
        labels += [folder_label(int(v), b) for v in t["label"]]
        logger.info("pooled features of %d pairs of bank folder %d (%.0f s)", n, b, time.time() - t0)
    out = {k: torch.cat(v) for k, v in feats.items()}
    out["label"] = torch.tensor(labels, dtype=torch.long)
    return out


def _bank_stats(folder: str | Path) -> dict[str, torch.Tensor]:
    """The pair statistics ``{"gt"|"reffr"|"reffr0": (N, 14)}`` of one bank folder's pairs, each centre-cropped to
    512 px as :func:`pooled_features` crops them."""
    from ..evaluation.fadex import _centre_crop
    from .photo_bank import bank_shards, hq_face

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(_centre_crop(a, 512)).permute(2, 0, 1)[None].float() / 255.0

    out: dict[str, list[torch.Tensor]] = {k: [] for k in HQ_KINDS}
    with torch.no_grad():
        for _, t in bank_shards([folder]):
            for k in range(len(t["label"])):
                lq = face_stats(tensor(t[f"lq_{k}"]))  # the LQ side once for its three HQ faces
                for kind in HQ_KINDS:
                    out[kind].append(combine(lq, face_stats(tensor(hq_face(t, kind, k)), blockiness=False))[0])
    return {k: torch.stack(v) for k, v in out.items()}


def _cached(cache: Path, key: str, compute) -> dict[str, torch.Tensor]:
    """The tensors in ``cache`` if it was written for ``key``; else ``compute()``'s, written there atomically."""
    if cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), "pt") as fh:
            if (fh.metadata() or {}).get("key") == key:
                return load_file(str(cache))
    out = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file(out, str(tmp), metadata={"key": key})
    tmp.rename(cache)
    return out


def check_features(pipe, part: str, n_photos: int, cache: Path) -> dict[str, torch.Tensor]:
    """Pooled features ``(photos, operators, C)`` per ``eval-photos --fadex-only`` key, of the benchmark grid on the
    ``part`` split's first ``n_photos`` photos (:func:`~..evaluation.photos.face_pairs`); cached in ``cache``."""
    from ..codes import module_id
    from ..evaluation.photos import benchmark_grid, face_pairs, select_photos

    grid = benchmark_grid()
    key = json.dumps({"encoder": module_id(pipe.fadex.encoder), "pool": _pool(pipe.fadex), "part": part,
                      "photos": n_photos, "operators": [o.name for o in grid]})

    def compute() -> dict[str, torch.Tensor]:
        out: dict[str, list[torch.Tensor]] = {k: [] for k in CHECK_KINDS}
        for _, rows in face_pairs(pipe, select_photos(n_photos, part), grid):
            for k in CHECK_KINDS:
                out[k].append(pooled_features(pipe.fadex, [r[k][0] for r in rows], [r[k][1] for r in rows]))
        return {k: torch.stack(v) for k, v in out.items()}

    return _cached(cache, key, compute)


def retrieval(head: torch.nn.Module, check: dict[str, torch.Tensor]) -> dict[str, float]:
    """Operator retrieval across photos (top-1) per key, with ``head`` on the cached pooled features."""
    from ..evaluation.photos import retrieval_across_photos

    with torch.no_grad():
        return {k: retrieval_across_photos(F.normalize(head(v.flatten(0, 1)), dim=1).view(*v.shape[:2], -1).numpy())[0]
                for k, v in check.items()}


def feature_scale(feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation of the bank's pooled features over every HQ kind: the head trains on
    standardised inputs (means and standard deviations of different stages differ in scale by orders of magnitude)."""
    every = torch.cat([feats[k] for k in HQ_KINDS])
    return every.mean(dim=0), every.std(dim=0).clamp_min(1e-6)


@torch.no_grad()
def standardise_head(head: torch.nn.Sequential, mean: torch.Tensor, std: torch.Tensor, *, undo: bool = False) -> None:
    """Re-parametrise ``head`` in place so that it computes the same function of ``(x - mean) / std`` as it did of
    ``x`` (``undo``: back again, folding the standardisation into the first layer, so the saved FaDeX reads raw
    pooled features)."""
    first = head[0]
    if undo:
        first.weight.div_(std)
        first.bias.sub_(first.weight @ mean)
    else:
        first.bias.add_(first.weight @ mean)
        first.weight.mul_(std)


def train_head(fadex, feats: dict[str, torch.Tensor], *, steps: int, seed: int, lr: float = 1e-4,
               temperature: float = 0.1, groups_per_batch: int = 32, pairs_per_group: int = 4,
               kind_probs: Sequence[float] = (0.3, 0.45, 0.25), check: dict[str, torch.Tensor] | None = None,
               eval_every: int = 250, log_file: Path | None = None, keep: str = "last") -> tuple[dict, dict]:
    """Train ``fadex.head`` in place; returns (the kept head's state dict, its check figures). ``keep="last"``: the
    head after the last step; ``"best"``: the one with the best mean GT / Ref-FR retrieval on ``check`` (a choice made
    on those photos: never pass held-out ones)."""
    if keep not in ("last", "best") or (keep == "best" and check is None):
        raise ValueError(f"keep must be 'last', or 'best' with check features; got {keep!r}")
    rng = np.random.default_rng(seed)
    head = fadex.head
    for p in fadex.encoder.parameters():
        p.requires_grad_(False)
    for p in head.parameters():  # a FaDeX loaded frozen (the pipeline's) has its head frozen too
        p.requires_grad_(True)
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    labels = feats["label"].numpy()
    groups = {int(v): np.flatnonzero(labels == v) for v in np.unique(labels)}
    groups = {k: v for k, v in groups.items() if len(v) >= pairs_per_group}
    keys = np.asarray(sorted(groups))
    if len(keys) < groups_per_batch:
        raise ValueError(f"the bank has {len(keys)} operator groups of >= {pairs_per_group} pairs; a batch needs "
                         f"{groups_per_batch} (lower --groups-per-batch or build a larger bank)")
    stack = torch.stack([feats[k] for k in HQ_KINDS], dim=1)  # n, kinds, c
    best, best_state, best_fig = -1.0, None, {}
    history = []

    def evaluate(step: int) -> None:
        nonlocal best, best_state, best_fig
        head.eval()
        fig = retrieval(head, check) if check is not None else {}
        head.train()
        score = (fig.get("gt", 0) + fig.get("reffr", 0)) / 2 if keep == "best" else step
        history.append({"step": step, **fig})
        if log_file is not None:
            with open(log_file, "a") as fh:
                fh.write(json.dumps({"step": step, "check": fig}) + "\n")
        if score > best:
            best, best_fig = score, {"step": step, **fig}
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}

    evaluate(0)
    for step in range(1, steps + 1):
        chosen = rng.choice(keys, size=groups_per_batch, replace=False)
        idx = np.concatenate([rng.choice(groups[int(c)], size=pairs_per_group, replace=False) for c in chosen])
        kind = torch.from_numpy(rng.choice(len(HQ_KINDS), size=len(idx), p=np.asarray(kind_probs) / sum(kind_probs)))
        x = stack[torch.from_numpy(idx), kind]  # b, c
        lab = torch.from_numpy(np.repeat(chosen, pairs_per_group))
        z = F.normalize(head(x), dim=1)
        logits = z @ z.T / temperature
        eye = torch.eye(len(idx), dtype=torch.bool)
        loss = multi_positive_info_nce(logits, (lab[:, None] == lab[None, :]) & ~eye, ~eye)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log_file is not None and step % 50 == 0:
            with open(log_file, "a") as fh:
                fh.write(json.dumps({"step": step, "loss": round(loss.item(), 5)}) + "\n")
        if step % eval_every == 0 or step == steps:
            evaluate(step)
    return best_state, best_fig


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m face2scene_core.fadex.head", description=__doc__.split("\n\n")[0])
    ap.add_argument("--fadex", default="face2scene_core/weights/fadex", help="FaDeX folder whose head is re-fitted")
    ap.add_argument("--bank", nargs="+", required=True, help="photo bank folder(s)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (final/ is the FaDeX with the new head)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--kind-probs", default="0.3,0.45,0.25",
                    help="sampling weights of the HQ kinds gt, reffr (references), reffr0 (none) (default %(default)s)")
    ap.add_argument("--check-part", default="train", choices=["train", "none"],
                    help="photos whose retrieval chooses the head ('train': the 16 train-check photos; never held-out)")
    ap.add_argument("--groups-per-batch", type=int, default=32, help="operator groups per batch, 4 pairs each")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--keep", default="last", choices=["last", "best"],
                    help="the head after the last step (default), or the best on the check photos (a choice on them)")
    ap.add_argument("--pool-stages", type=int, default=None,
                    help="pool the last N encoder stages for the head (default: as the FaDeX folder does; a change "
                         "starts the head afresh)")
    ap.add_argument("--pool-std", default=None, choices=["yes", "no"],
                    help="pool channel standard deviations beside the means (default: as the FaDeX folder does)")
    ap.add_argument("--pair-stats", default=None, choices=["yes", "no"],
                    help="the head also reads 14 classic statistics of the pair (JPEG blockiness, noise, band "
                         "energies; face2scene_core/fadex/pair_stats.py), its other weights starting from the loaded "
                         "head's (default: as the FaDeX folder does)")
    ap.add_argument("--standardise", default="auto", choices=["auto", "yes", "no"],
                    help="train on pooled features standardised over the bank, folded into the saved head; 'auto' "
                         "(default): for a new head (another pooling), not when the loaded head is fine-tuned")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from ..pipeline import Face2ScenePipeline
    from ..training.stage2 import load_fadex

    t0 = time.time()
    pipe = Face2ScenePipeline.from_paths(fadex=args.fadex, device="cpu") if args.check_part != "none" else None
    fadex = (pipe.fadex if pipe is not None else load_fadex(args.fadex)).float().cpu()
    torch.manual_seed(args.seed)  # a new head (another pooling) starts from this seed
    loaded = fadex
    fadex = with_pool(fadex, args.pool_stages or fadex.config.pool_stages,
                      fadex.config.pool_std if args.pool_std is None else args.pool_std == "yes",
                      None if args.pair_stats is None else args.pair_stats == "yes")
    warm = fadex is loaded or _pool(fadex)[:2] == _pool(loaded)[:2]  # the head starts as the loaded one's
    if pipe is not None:
        pipe.fadex = fadex
    feats = bank_features(fadex, args.bank, args.out)
    check = (check_features(pipe, args.check_part, 16, args.out / f"check_features_{args.check_part}.safetensors")
             if pipe is not None else None)
    logger.info("features ready (%.0f s): %d bank pairs", time.time() - t0, len(feats["label"]))
    standardise = args.standardise == "yes" or (args.standardise == "auto" and fadex is not loaded)
    if standardise:
        mean, std = feature_scale(feats)
        feats = {k: v if k == "label" else (v - mean) / std for k, v in feats.items()}
        check = {k: (v - mean) / std for k, v in check.items()} if check is not None else None
        if warm:  # the loaded head keeps its function; a new one starts out in standardised coordinates
            standardise_head(fadex.head, mean, std)
    torch.manual_seed(args.seed)
    log_file = args.out / "metrics.jsonl"
    log_file.unlink(missing_ok=True)
    state, fig = train_head(fadex, feats, steps=args.steps, seed=args.seed, lr=args.lr, temperature=args.temperature,
                            kind_probs=[float(v) for v in args.kind_probs.split(",")], check=check,
                            groups_per_batch=args.groups_per_batch,
                            eval_every=args.eval_every, log_file=log_file, keep=args.keep)
    fadex.head.load_state_dict(state)
    if standardise:
        standardise_head(fadex.head, mean, std, undo=True)
    fadex.eval().save_pretrained(args.out / "final", safe_serialization=True)
    write_bytes_atomic(args.out / "head_fit.json", json.dumps(
        {"chosen": fig, "args": {k: str(v) for k, v in vars(args).items()}, "seconds": round(time.time() - t0)},
        indent=1).encode())
    print(f"head kept at step {fig.get('step')}: " + ", ".join(f"{k} {v:.1%}" for k, v in fig.items() if k != "step")
          + f" -> {args.out / 'final'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
