"""The photo benchmark: whole held-out photos at native scale, a fixed operator grid, every column paired.

    face2scene eval-photos -o docs/results/photos [--photos 16] [--max-pixels 1000000] [--ablation NOTOKENS.safetensors]
    face2scene eval-photos --tune-classic -o configs/classic_baseline.json      # train split only

Photos: the held-out identities of ``configs/split.json`` that have a photo of at least ``min_pixels`` and at least
one other photo (the references: up to ``max_refs`` other photos of the same person). Each photo is area-downscaled
to at most ``max_pixels`` (a clean ground truth), then degraded at that native scale by every operator of
:func:`~face2scene_core.degradation.families.benchmark_grid` (clean, JPEG, sensor noise, Gaussian and motion blur,
x2 / x4 down-up, D1-D4, random Real-ESRGAN).

Columns (each a restored photo compared with the ground truth):

- ``input``: the degraded photo itself;
- ``classic``: OpenCV non-local means + unsharp mask, tuned on the train split (``--tune-classic``);
- ``shipped``: the pipeline as a user runs it (right references, Ref-FR, FaDeX, tokens, the face check);
- ``unchecked``: the same without the face check (:mod:`face2scene_core.face_check`);
- ``shuffled``: the same model and photo with the tokens of another operator of the grid (a wrong degradation code);
- ``no_tokens``: the same model with ``tokens=None``;
- ``ablation``: a separately trained no-token model (``--ablation``);
- ``wrong_refs``: the shipped pipeline with references of another held-out person;
- ``resr_q`` / ``resr_h``: Real-ESRGAN x4plus on the input shrunk to 1/4 / 1/2 (optional wheel; a subset of cases).

Metrics: PSNR / SSIM on the luma of the whole photo, of the face box (the native crop of the face the pipeline
uses, found on the clean photo) and of the face-excluded photo (the ground-truth face pasted in with the soft face
mask, the paper's Table 3), per case; summaries per operator family and overall; paired 95% intervals and win
counts against the input and the classic baseline; seconds per photo of the shipped pipeline; a crops figure.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from ..degradation.families import FAMILIES, GridOperator, benchmark_grid
from ..imageio import load_image, to_float, to_uint8, write_bytes_atomic
from ..training.data import default_datasets_dir
from .metrics import psnr, ssim
from .peers import PEER_NAME
from .classic import ClassicParams, classic_restore, tune_classic
from .stats import paired, summary

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLASSIC = REPO_ROOT / "configs" / "classic_baseline.json"
METRICS = ("psnr", "ssim", "face_psnr", "face_ssim", "noface_psnr", "noface_ssim")


@dataclass
class Photo:
    """A benchmark photo: its path, identity, the clean image at benchmark size, and reference images."""

    path: Path
    identity: str
    image: np.ndarray
    refs: list[np.ndarray]
    ref_paths: list[Path]


datasets_root = default_datasets_dir  # the shared photos (training.data's rule), under this module's older name


def fit_pixels(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """Area-downscale so that ``H * W <= max_pixels`` (never upscale); sides even."""
    h, w = image.shape[:2]
    s = min(1.0, (max_pixels / float(h * w)) ** 0.5)
    nh, nw = max(2, int(h * s) // 2 * 2), max(2, int(w * s) // 2 * 2)
    if (nh, nw) == (h, w):
        return image
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)


def identity_photos(part: str = "heldout", *, split_file: str | Path = REPO_ROOT / "configs" / "split.json",
                    min_pixels: int = 250_000) -> dict[str, list[Path]]:
    """``{identity: [photo paths]}`` of the split's ``heldout`` or ``train`` identities: whole photos
    (``scene_with_faces``) of one labelled person, at least ``min_pixels``, identities with >= 2 such photos."""
    root = datasets_root()
    split = json.loads(Path(split_file).read_text())
    ids = set(split["heldout_identities" if part == "heldout" else "train_identities"])
    out: dict[str, list[Path]] = {}
    with open(root / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["identity"] in ids and row["kind"] == "scene_with_faces" \
                    and int(row["width"]) * int(row["height"]) >= min_pixels:
                out.setdefault(row["identity"], []).append(root / row["path"])
    return {k: sorted(v) for k, v in sorted(out.items()) if len(v) >= 2}


def select_photo_paths(n: int, part: str = "heldout", *, max_refs: int = 3,
                       min_pixels: int = 250_000) -> list[tuple[str, Path, list[Path]]]:
    """``(identity, path, reference paths)`` of the photos :func:`select_photos` loads, without decoding any image."""
    groups = identity_photos(part, min_pixels=min_pixels)
    if not groups:
        raise FileNotFoundError(f"no {part} identity with 2 or more photos under {datasets_root()}; "
                                "set FACE2SCENE_DATASETS to the datasets folder")
    order: list[tuple[str, Path]] = []
    depth = 0
    while len(order) < sum(len(v) for v in groups.values()):
        order += [(k, v[depth]) for k, v in groups.items() if depth < len(v)]
        depth += 1
    return [(identity, path, [p for p in groups[identity] if p != path][:max_refs]) for identity, path in order[:n]]


def select_photos(n: int, part: str = "heldout", *, max_pixels: int = 1_000_000, max_refs: int = 3,
                  min_pixels: int = 250_000) -> list[Photo]:
    """``n`` photos taken round-robin over identities (deterministic); references = other photos of the person."""
    return [Photo(path=path, identity=identity, image=fit_pixels(load_image(path), max_pixels),
                  refs=[fit_pixels(load_image(p), max_pixels) for p in others], ref_paths=others)
            for identity, path, others in select_photo_paths(n, part, max_refs=max_refs, min_pixels=min_pixels)]


def _apply(image: np.ndarray, op: GridOperator) -> np.ndarray:
    from ..degradation import apply_degradation

    return to_uint8(apply_degradation(to_float(image), op.params))


def measure(out: np.ndarray, gt: np.ndarray, box: tuple[int, int, int, int] | None, mask: np.ndarray | None) -> dict:
    """The :data:`METRICS` of one restored photo (luma; face metrics ``None`` without a face)."""
    from .metrics import face_excluded

    m = {"psnr": psnr(out, gt), "ssim": ssim(out, gt)}
    if box is not None and mask is not None:
        x0, y0, x1, y1 = box
        m["face_psnr"] = psnr(out[y0:y1, x0:x1], gt[y0:y1, x0:x1])
        m["face_ssim"] = ssim(out[y0:y1, x0:x1], gt[y0:y1, x0:x1])
        excl = face_excluded(out, gt, mask)
        m["noface_psnr"], m["noface_ssim"] = psnr(excl, gt), ssim(excl, gt)
    else:
        m.update({k: None for k in ("face_psnr", "face_ssim", "noface_psnr", "noface_ssim")})
    return {k: (None if v is None else float(min(v, 100.0))) for k, v in m.items()}


class Columns:
    """Runs every model column of one photo; keeps the pipeline's detector / Ref-FR / references between photos."""

    def __init__(self, pipe, ablation=None, classic: ClassicParams | None = None, peer=None) -> None:
        self.pipe, self.ablation, self.classic, self.peer = pipe, ablation, classic, peer

    @torch.no_grad()
    def tokens(self, lq: np.ndarray, refs: Sequence[np.ndarray], with_pair: bool = False):
        """(tokens, face box, soft face mask) from the pipeline's own stages I-II, or ``(None, None, None)``;
        ``with_pair``: a fourth item, ``(aligned face, Ref-FR face)`` for the face check (or None)."""
        from ..errors import FaceTooSmallError, NoFaceError
        from ..faces.align import face_mask, native_crop_box
        from ..pipeline import _Timer

        timer, report = _Timer(), {}
        try:
            face, ref_aligned = self.pipe.choose_face(lq, list(refs), "reference", timer, report)
            tokens, hq, aligned, _ = self.pipe.degradation_tokens(lq, face, ref_aligned, timer, report)
        except (NoFaceError, FaceTooSmallError) as exc:
            log.warning("no tokens: %s", exc)
            return (None, None, None, None) if with_pair else (None, None, None)
        out = (tokens, native_crop_box(aligned, lq.shape), face_mask(aligned, lq.shape))
        return out + ((aligned, hq),) if with_pair else out

    @staticmethod
    def checked(lq: np.ndarray, out: np.ndarray, pair) -> tuple[np.ndarray, float | None]:
        """``out`` after the pipeline's face check against ``pair = (aligned, Ref-FR face)``, and its strength."""
        from ..face_check import apply_strength, face_check

        if pair is None:
            return out, None
        strength = face_check(lq, out, *pair).strength
        return apply_strength(lq, out, strength), strength

    @torch.no_grad()
    def restore(self, restorer, lq: np.ndarray, tokens) -> np.ndarray:
        x = torch.from_numpy(lq).permute(2, 0, 1)[None].float().div(255.0)
        y = restorer.restore(x, tokens, progress=False)
        return (y[0].permute(1, 2, 0).clamp(0, 1) * 255.0 + 0.5).byte().numpy()


def run_benchmark(*, out_dir: Path, n_photos: int = 16, max_pixels: int = 1_000_000, adapter: str | None = None,
                  fadex: str | None = None, ablation: str | None = None, classic_file: Path = DEFAULT_CLASSIC,
                  ops: Sequence[str] | None = None, peer_cases: int = 16, no_peer: bool = False,
                  figure_rows: int = 6, wrong_refs: bool = True, shard: tuple[int, int] = (0, 1),
                  part: str = "heldout") -> dict:
    """Run the benchmark, write ``photos.json`` (+ ``cases.csv``, ``crops.png``) to ``out_dir``; return the summary.

    ``part``: ``"heldout"`` (what is reported) or ``"train"`` (the split's train identities: for choosing models).

    ``shard=(k, n)``: only photos ``k, k + n, ...`` (run ``n`` processes side by side, then :func:`merge_shards`);
    a shard writes ``photos.shard<k>of<n>.json`` instead of the summary files.
    """
    from ..pipeline import Face2ScenePipeline
    from ..restorer.loading import restorer_from_adapter
    from .peers import load_peer

    out_dir.mkdir(parents=True, exist_ok=True)
    grid = [op for op in benchmark_grid() if ops is None or op.name in ops or op.family in ops]
    if not grid:
        raise ValueError(f"--ops {ops} selects no operator of the grid {[o.name for o in benchmark_grid()]}")
    classic = ClassicParams(**json.loads(Path(classic_file).read_text())["params"]) if Path(classic_file).is_file() \
        else None
    if classic is None:
        log.warning("no tuned classic baseline at %s (run `face2scene eval-photos --tune-classic -o %s`); "
                    "the classic column is skipped", classic_file, classic_file)
    peer, why = (None, "disabled (--no-peer)") if no_peer else load_peer()
    if peer is None:
        log.warning("Real-ESRGAN columns skipped: %s", why)
    pipe = Face2ScenePipeline.from_paths(adapter=adapter, fadex=fadex, device="cpu")
    abl = restorer_from_adapter(ablation).eval() if ablation else None
    cols = Columns(pipe, abl, classic, peer)
    photos = select_photos(n_photos, part, max_pixels=max_pixels)
    wrong_of = {i: photos[(i + 1 + k) % len(photos)] for i in range(len(photos))
                for k in range(len(photos) - 1) if photos[(i + 1 + k) % len(photos)].identity != photos[i].identity}
    n_ops = len(grid)
    shift = max(1, n_ops // 2)
    peer_set = set()
    if peer is not None and peer_cases > 0:  # a stratified subset: walk the photos and the families together
        all_cases = [(p, k) for p in range(len(photos)) for k in range(n_ops)]
        step = max(1, len(all_cases) // peer_cases)
        peer_set = {(p, (k + p) % n_ops) for p, k in all_cases[::step][:peer_cases]}
    cases, figure = [], []
    k_shard, n_shard = shard
    for pi, photo in enumerate(photos):
        if pi % n_shard != k_shard:
            continue
        gt = photo.image
        lqs = [_apply(gt, op) for op in grid]
        t0 = time.perf_counter()
        toks = [cols.tokens(lq, photo.refs, with_pair=True) for lq in lqs]
        t_tokens = (time.perf_counter() - t0) / n_ops
        # the face box and mask of the metrics: from the clean photo, the same for every column and operator
        _, box, mask = cols.tokens(gt, photo.refs)
        wrong = wrong_of.get(pi) if wrong_refs else None
        # one reference set at a time: the pipeline prepares (detects, aligns, embeds) references once per set
        wrong_toks = [cols.tokens(lq, wrong.refs, with_pair=True) for lq in lqs] if wrong is not None else None
        for k, (op, lq) in enumerate(zip(grid, lqs)):
            tokens, pair = toks[k][0], toks[k][3]
            t1 = time.perf_counter()
            unchecked = cols.restore(pipe.restorer, lq, tokens)
            shipped, strength = cols.checked(lq, unchecked, pair)  # the pipeline's default face check
            t_restore = time.perf_counter() - t1
            outs = {"input": lq, "shipped": shipped, "unchecked": unchecked}
            if classic is not None:
                outs["classic"] = classic_restore(lq, classic)
            if tokens is not None:  # as the pipeline would run them: the face check with the face it has
                outs["shuffled"] = cols.checked(lq, cols.restore(pipe.restorer, lq, toks[(k + shift) % n_ops][0]),
                                                pair)[0]
                outs["no_tokens"] = cols.restore(pipe.restorer, lq, None)
            if abl is not None:
                outs["ablation"] = cols.restore(abl, lq, None)
            if wrong_toks is not None and wrong_toks[k][0] is not None:
                outs["wrong_refs"] = cols.checked(lq, cols.restore(pipe.restorer, lq, wrong_toks[k][0]),
                                                  wrong_toks[k][3])[0]
            if (pi, k) in peer_set:
                outs["resr_q"] = peer(lq, 0.25)
                outs["resr_h"] = peer(lq, 0.5)
            row = {"photo": photo.path.name, "identity": photo.identity, "size": list(gt.shape[:2]),
                   "op": op.name, "family": op.family, "has_tokens": tokens is not None,
                   "seconds_shipped": t_tokens + t_restore, "face_check_strength": strength,
                   "wrong_refs_identity": None if wrong is None else wrong.identity}
            for name, img in outs.items():
                row[name] = measure(img, gt, box, mask)
            cases.append(row)
            log.info("%s %-18s input %.2f shipped %.2f classic %s", photo.path.name, op.name, row["input"]["psnr"],
                     row["shipped"]["psnr"], f"{row['classic']['psnr']:.2f}" if "classic" in row else "-")
            if len(figure) < figure_rows and k == (pi * 3) % n_ops and box is not None:
                figure.append((photo.path.name, op.name, gt, outs, box))
    setup = {
        "photos": [{"path": str(p.path.relative_to(datasets_root())), "identity": p.identity,
                    "size": list(p.image.shape[:2]), "refs": [q.name for q in p.ref_paths]} for p in photos],
        "operators": [{"name": o.name, "family": o.family, "params": o.params.to_dict()} for o in grid],
        "max_pixels": max_pixels, "part": part, "adapter": adapter or "embedded", "fadex": fadex or "embedded",
        "ablation": ablation, "classic": None if classic is None else classic.to_dict(),
        "peer": None if peer is None else PEER_NAME, "peer_skipped": why,
        "peer_cases": len(peer_set), "metric_channel": "y (BT.601 luma)",
        "shuffled": f"tokens of operator k + {shift} (mod {n_ops}) of the same photo",
        "face_check": "shipped, shuffled and wrong_refs with the pipeline's face check (face2scene_core.face_check); "
                      "unchecked: the shipped model without it",
    }
    if figure:
        _figure(out_dir / ("crops.png" if n_shard == 1 else f"crops.shard{k_shard}.png"), figure)
    if n_shard > 1:
        write_bytes_atomic(out_dir / f"photos.shard{k_shard}of{n_shard}.json",
                           json.dumps({"setup": setup, "cases": cases}, indent=1).encode())
        return {"setup": setup, "n_cases": len(cases)}
    return _write_result(out_dir, cases, grid, setup)


def _write_result(out_dir: Path, cases: list[dict], grid: Sequence[GridOperator], setup: dict) -> dict:
    result = summarise(cases, grid)
    result["setup"] = setup
    write_bytes_atomic(out_dir / "photos.json", json.dumps({**result, "cases": cases}, indent=1).encode())
    _write_csv(out_dir / "cases.csv", cases)
    return result


def merge_shards(out_dir: Path, *, partial: bool = False) -> dict:
    """Merge ``photos.shard*of<n>.json`` of one run into ``photos.json`` / ``cases.csv`` (cases in photo order).

    ``partial``: summarise the shards present even if some are missing (the summary says which were merged)."""
    files = sorted(out_dir.glob("photos.shard*of*.json"))
    if not files:
        raise FileNotFoundError(f"no photos.shard*of*.json in {out_dir}")
    parts = [json.loads(f.read_text()) for f in files]
    n = int(files[0].stem.split("of")[-1])
    if len(files) != n and not partial:
        raise FileNotFoundError(f"{len(files)} of {n} shards in {out_dir}: run the missing ones first (or --partial)")
    setup = parts[0]["setup"]
    setup["shards_merged"] = [f.name for f in files]
    setup["shards_total"] = n
    present = {c["photo"] for part in parts for c in part["cases"]}
    setup["photos"] = [p for p in setup["photos"] if Path(p["path"]).name in present]
    order = {Path(p["path"]).name: i for i, p in enumerate(setup["photos"])}
    cases = sorted((c for part in parts for c in part["cases"]), key=lambda c: order.get(c["photo"], 0))
    setup["peer_cases"] = sum(part["setup"]["peer_cases"] for part in parts)
    names = [o["name"] for o in setup["operators"]]
    grid = [op for op in benchmark_grid() if op.name in names]
    crops = sorted(out_dir.glob("crops.shard*.png"))
    if crops:
        crops[0].replace(out_dir / "crops.png")
    return _write_result(out_dir, cases, grid, setup)


def _add_columns(out_dir: Path, columns, wanted, update_setup) -> int:
    """Add the columns ``columns(cols, lq) -> {name: image}`` gives to the ``wanted(row)`` cases of the shard files of
    a run: the same photos, operators, face boxes and masks; ``update_setup(part)`` notes it in each shard's setup.
    Rewrites each shard atomically; returns the cases done."""
    from ..pipeline import Face2ScenePipeline

    files = sorted(out_dir.glob("photos.shard*of*.json"))
    if not files:
        raise FileNotFoundError(f"no photos.shard*of*.json in {out_dir}")
    grid = {op.name: op for op in benchmark_grid()}
    loaded: dict[tuple, tuple] = {}  # the shards of one run share the models and photos: load them once
    done = 0
    for f in files:
        part = json.loads(f.read_text())
        rows = [row for row in part["cases"] if wanted(row)]
        if rows:
            setup = part["setup"]
            key = (setup["adapter"], setup["fadex"], len(setup["photos"]), setup.get("part", "heldout"),
                   setup["max_pixels"])
            if key not in loaded:
                pipe = Face2ScenePipeline.from_paths(adapter=None if key[0] == "embedded" else key[0],
                                                     fadex=None if key[1] == "embedded" else key[1], device="cpu")
                loaded[key] = (Columns(pipe), {p.path.name: p for p in select_photos(key[2], key[3],
                                                                                     max_pixels=key[4])})
            cols, photos = loaded[key]
            boxes: dict[str, tuple] = {}
            for row in rows:
                photo = photos[row["photo"]]
                if row["photo"] not in boxes:
                    boxes[row["photo"]] = cols.tokens(photo.image, photo.refs)[1:]
                lq = _apply(photo.image, grid[row["op"]])
                for name, img in columns(cols, lq).items():
                    row[name] = measure(img, photo.image, *boxes[row["photo"]])
                done += 1
                log.info("%s %-18s: columns added", row["photo"], row["op"])
        update_setup(part)
        write_bytes_atomic(f, json.dumps(part, indent=1).encode())
    return done


def add_ablation(out_dir: Path, ablation: str) -> int:
    """Add the ``ablation`` column (a no-token model, restored without tokens) to every case of the shard files of a
    run made without it; returns the cases done."""
    from ..restorer.loading import restorer_from_adapter

    abl = restorer_from_adapter(ablation).eval()
    return _add_columns(out_dir, lambda cols, lq: {"ablation": cols.restore(abl, lq, None)}, lambda row: True,
                        lambda part: part["setup"].update(ablation=ablation))


def spread_cases(rows: Sequence[dict], n: int) -> list[dict]:
    """``n`` of ``rows`` spread over the operator families (round robin, families by name), within a family over its
    operators (the least used first), then over the photos (the least used first; ties: the earlier row).
    Deterministic."""
    by_family: dict[str, list[dict]] = {}
    for row in rows:
        by_family.setdefault(row["family"], []).append(row)
    used_op: dict[str, int] = {}
    used_photo: dict[str, int] = {}
    picked: list[dict] = []
    while len(picked) < n and any(by_family.values()):
        for family in sorted(by_family):
            queue = by_family[family]
            if not queue or len(picked) >= n:
                continue
            # min keeps the first of equals
            row = min(queue, key=lambda r: (used_op.get(r["op"], 0), used_photo.get(r["photo"], 0)))
            queue.remove(row)
            used_op[row["op"]] = used_op.get(row["op"], 0) + 1
            used_photo[row["photo"]] = used_photo.get(row["photo"], 0) + 1
            picked.append(row)
    return picked


def add_peer(out_dir: Path, n_cases: int) -> int:
    """Add the Real-ESRGAN columns (``resr_q``, ``resr_h``: x4plus on the input at 1/4 and 1/2 scale) to ``n_cases``
    more cases of a sharded run (:func:`spread_cases` over the cases that lack them); returns the cases done."""
    from .peers import load_peer

    peer, why = load_peer()
    if peer is None:
        raise RuntimeError(f"the Real-ESRGAN peer is unavailable: {why}")
    rows = [row for f in sorted(out_dir.glob("photos.shard*of*.json")) for row in json.loads(f.read_text())["cases"]
            if "resr_q" not in row]
    chosen = {(row["photo"], row["op"]) for row in spread_cases(rows, n_cases)}

    def update_setup(part: dict) -> None:
        part["setup"].update(peer=PEER_NAME, peer_skipped=None,
                             peer_cases=sum("resr_q" in row for row in part["cases"]))

    return _add_columns(out_dir, lambda cols, lq: {"resr_q": peer(lq, 0.25), "resr_h": peer(lq, 0.5)},
                        lambda row: (row["photo"], row["op"]) in chosen, update_setup)


def summarise(cases: list[dict], grid: Sequence[GridOperator]) -> dict:
    """Per column: metric means overall and per family; paired differences against input and classic."""
    columns = [c for c in ("input", "classic", "shipped", "unchecked", "shuffled", "no_tokens", "ablation", "wrong_refs",
                           "resr_q", "resr_h") if any(c in r for r in cases)]
    families = [f for f in FAMILIES if any(r["family"] == f for r in cases)]
    out: dict = {"columns": columns, "families": families, "n_cases": len(cases),
                 "n_photos": len({r["photo"] for r in cases}), "overall": {}, "per_family": {}, "per_operator": {},
                 "paired": {}}

    def col_metric(rows, col, metric):
        return [r[col][metric] for r in rows if col in r and r[col][metric] is not None]

    for col in columns:
        out["overall"][col] = {m: summary(v) for m in METRICS if (v := col_metric(cases, col, m))}
        out["per_family"][col] = {f: {m: summary(v)["mean"] for m in METRICS
                                      if (v := col_metric([r for r in cases if r["family"] == f], col, m))}
                                  for f in families}
        out["per_operator"][col] = {o.name: summary(v)["mean"] for o in grid
                                    if (v := col_metric([r for r in cases if r["op"] == o.name], col, "psnr"))}
    pairs = [("shipped", "input"), ("shipped", "classic"), ("classic", "input"), ("shipped", "unchecked"),
             ("unchecked", "input"), ("shipped", "shuffled"),
             ("shipped", "no_tokens"), ("shipped", "ablation"), ("shipped", "wrong_refs"), ("resr_q", "input"),
             ("resr_h", "input"), ("shipped", "resr_q"), ("shipped", "resr_h")]
    for a, b in pairs:
        rows = [r for r in cases if a in r and b in r]
        if not rows:
            continue
        key = f"{a}-{b}"
        out["paired"][key] = {}
        for m in ("psnr", "ssim", "face_psnr", "noface_psnr"):
            sel = [r for r in rows if r[a][m] is not None and r[b][m] is not None]
            if sel:
                out["paired"][key][m] = paired([r[a][m] for r in sel], [r[b][m] for r in sel])
        out["paired"][key]["per_family_psnr"] = {
            f: paired([r[a]["psnr"] for r in rows if r["family"] == f], [r[b]["psnr"] for r in rows if r["family"] == f])
            for f in families if any(r["family"] == f for r in rows)}
    # the same pairs over the degraded operators only (a clean input has PSNR inf, capped at 100 dB, which would
    # dominate any mean that includes it; clean photos are reported on their own below)
    degraded = [r for r in cases if r["family"] != "clean"]
    out["paired_degraded"] = {}
    for a, b in pairs:
        rows = [r for r in degraded if a in r and b in r]
        if rows:
            out["paired_degraded"][f"{a}-{b}"] = {m: paired([r[a][m] for r in rows], [r[b][m] for r in rows])
                                                  for m in ("psnr", "ssim", "noface_psnr")
                                                  if all(r[a][m] is not None and r[b][m] is not None for r in rows)}
    out["overall_degraded"] = {c: {m: summary(v) for m in METRICS if (v := col_metric(degraded, c, m))}
                               for c in columns}
    clean = [r for r in cases if r["family"] == "clean"]
    if clean:  # do no harm: PSNR(output, input) on clean photos = PSNR(output, gt) since input == gt
        out["clean_psnr_vs_input"] = {c: summary(v) for c in columns  # a subset column may have no clean case
                                  if c != "input" and (v := col_metric(clean, c, "psnr"))}
    out["seconds_per_photo_shipped"] = summary([r["seconds_shipped"] for r in cases])
    return out


def _write_csv(path: Path, cases: list[dict]) -> None:
    cols = [c for c in ("input", "classic", "shipped", "unchecked", "shuffled", "no_tokens", "ablation", "wrong_refs", "resr_q",
                        "resr_h") if any(c in r for r in cases)]
    lines = ["photo,op,family," + ",".join(f"{c}_{m}" for c in cols for m in ("psnr", "ssim", "noface_psnr"))]
    for r in cases:
        vals = []
        for c in cols:
            for m in ("psnr", "ssim", "noface_psnr"):
                v = r.get(c, {}).get(m)
                vals.append("" if v is None else f"{v:.4f}")
        lines.append(f"{r['photo']},{r['op']},{r['family']}," + ",".join(vals))
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def _figure(path: Path, rows: list) -> None:
    """One row per example: GT | input | classic | shipped (| Real-ESRGAN), a 256 px crop around the face and one
    of the background, each labelled with its PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["input", "classic", "shipped", "resr_q"]
    fig, axes = plt.subplots(2 * len(rows), 1 + len(names), figsize=(3 * (1 + len(names)), 6 * len(rows)))
    axes = np.atleast_2d(axes)
    for i, (photo, op, gt, outs, box) in enumerate(rows):
        h, w = gt.shape[:2]
        cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        s = min(256, h, w)
        face_win = (max(0, min(cx - s // 2, w - s)), max(0, min(cy - s // 2, h - s)))
        bg_win = (0 if cx > w // 2 else w - s, h - s)  # the corner away from the face
        for j, (wx, wy) in enumerate((face_win, bg_win)):
            ax_row = axes[2 * i + j]
            crop = lambda im: im[wy:wy + s, wx:wx + s]  # noqa: E731
            ax_row[0].imshow(crop(gt))
            ax_row[0].set_title(f"{photo} {op}\nground truth", fontsize=8)
            for k, n in enumerate(names, start=1):
                ax_row[k].axis("off")
                if n in outs:
                    ax_row[k].imshow(crop(outs[n]))
                    ax_row[k].set_title(f"{n} {psnr(crop(outs[n]), crop(gt)):.2f} dB", fontsize=8)
            ax_row[0].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@torch.no_grad()
def face_pairs(pipe, photos: Sequence[Photo], ops: Sequence[GridOperator]):
    """For each photo (whose face is found): ``(photo, [per operator {"gt": (lq, hq), "reffr": (lq, hq),
    "reffr_norefs": (lq, hq)}])``, the native-scale face pairs FaDeX compares, with the ground-truth face, the Ref-FR
    face (from the photo's references, as the pipeline makes it) and the Ref-FR face made without references as HQ."""
    from ..faces.align import align_face, native_pair
    from ..faces.select import prepare_references
    from ..pipeline import _Timer

    for photo in photos:
        face, _ = pipe.choose_face(photo.image, photo.refs, "reference", _Timer(), {})
        refs_aligned, _ = prepare_references(photo.refs, pipe.detector, pipe.embedder, size=pipe.align_size)
        gt_aligned = align_face(photo.image, face, size=pipe.align_size)
        rows = []
        for op in ops:
            lq = _apply(photo.image, op)
            lq_aligned = align_face(lq, face, size=pipe.align_size)
            hq = pipe.reffr.restore(lq_aligned.image, [a.image for a in refs_aligned])
            hq0 = pipe.reffr.restore(lq_aligned.image, []) if refs_aligned else hq
            rows.append({key: native_pair(lq, lq_aligned, face_hq) for key, face_hq in
                         (("gt", gt_aligned.image), ("reffr", hq), ("reffr_norefs", hq0))})
        yield photo, rows


def retrieval_across_photos(e: np.ndarray) -> tuple[float, list[float]]:
    """Operator retrieval across photos for unit embeddings ``e (photos, operators, D)``: each code's nearest code
    among the *other* photos' must be the same operator. Returns (top-1 overall, top-1 per operator)."""
    n, p, _ = e.shape
    flat = e.reshape(n * p, -1).astype(np.float64)
    sim = flat @ flat.T
    img = np.repeat(np.arange(n), p)
    op_id = np.tile(np.arange(p), n)
    sim[img[:, None] == img[None, :]] = -np.inf  # across photos only
    hit = op_id[sim.argmax(axis=1)] == op_id
    return float(hit.mean()), [float(hit[op_id == q].mean()) for q in range(p)]


def fadex_on_photos(*, out_dir: Path, n_photos: int = 16, max_pixels: int = 1_000_000, fadex: str | None = None,
                    ops: Sequence[str] | None = None, part: str = "heldout") -> dict:
    """Does FaDeX see the grid on whole photos? Embeds every (photo, operator) native face pair three times, with the
    ground-truth face, the Ref-FR face (the pipeline's: from the photo's references) and the Ref-FR face made without
    references as HQ, and reports the paper's Fig. 3 statistics plus operator
    retrieval *across photos* (nearest embedding among the other photos). Writes ``fadex_photos.json``."""
    from .fadex import similarity_stats
    from ..pipeline import Face2ScenePipeline

    pipe = Face2ScenePipeline.from_paths(fadex=fadex, device="cpu")
    grid = [op for op in benchmark_grid() if ops is None or op.name in ops or op.family in ops]
    emb = {"gt": [], "reffr": [], "reffr_norefs": []}
    used = []
    face_psnr: dict[str, list] = {"input": [], "reffr": [], "reffr_vs_input": [], "reffr_norefs": [],
                                  "reffr_norefs_vs_input": []}  # (photo, operator), luma dB
    for photo, op_pairs in face_pairs(pipe, select_photos(n_photos, part, max_pixels=max_pixels), grid):
        for key in emb:
            emb[key].append(np.stack([pipe.fadex.encode_pair(*pairs[key]).embedding[0].float().cpu().numpy()
                                      for pairs in op_pairs]))
        (lq, hq), gt = zip(*(pairs["reffr"] for pairs in op_pairs)), [pairs["gt"][1] for pairs in op_pairs]
        hq0 = [pairs["reffr_norefs"][1] for pairs in op_pairs]
        for name, x, y in (("input", lq, gt), ("reffr", hq, gt), ("reffr_vs_input", hq, lq),
                           ("reffr_norefs", hq0, gt), ("reffr_norefs_vs_input", hq0, lq)):
            face_psnr[name].append([psnr(u, v) for u, v in zip(x, y)])
        used.append(photo.path.name)
    result: dict = {"photos": used, "part": part, "operators": [o.name for o in grid], "fadex": fadex or "embedded"}
    if used:  # what the Ref-FR face is to FaDeX: how close to the true face, and how far it moved from the input
        result["face_psnr_per_operator"] = {
            name: {o.name: round(float(np.mean(np.asarray(v)[:, q])), 2) for q, o in enumerate(grid)}
            for name, v in face_psnr.items()}
    for key, arr in emb.items():
        e = np.stack(arr)  # n, p, d
        st = similarity_stats(e)
        st.pop("_hist", None)
        st["top1_across_photos"], per_op = retrieval_across_photos(e)
        st["top1_across_photos_per_operator"] = {o.name: v for o, v in zip(grid, per_op)}
        st["chance_across_photos"] = 1.0 / e.shape[1]
        result[key] = st
    if len(emb["gt"]) and len(emb["reffr"]):  # cross: a Ref-FR code's nearest GT code of another photo
        g, r = np.stack(emb["gt"]), np.stack(emb["reffr"])
        n, p, _ = g.shape
        sim = r.reshape(n * p, -1) @ g.reshape(n * p, -1).T
        img = np.repeat(np.arange(n), p)
        sim[img[:, None] == img[None, :]] = -np.inf
        result["cross_reffr_to_gt_top1"] = float((np.tile(np.arange(p), n)[sim.argmax(1)] == np.tile(np.arange(p), n)).mean())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out_dir / "fadex_photos.json", json.dumps(result, indent=1).encode())
    return result


def tune_classic_on_train(out_file: Path, *, n_photos: int = 8, max_pixels: int = 1_000_000) -> dict:
    """Tune the classic baseline on the TRAIN identities' photos under the whole grid; write ``out_file``."""
    photos = select_photos(n_photos, "train", max_pixels=max_pixels)
    # the clean operator is left out of the objective: every setting but the identity harms a clean photo, and
    # its capped PSNR (100 dB) would outweigh everything else; the baseline is tuned for degraded photos
    grid = [op for op in benchmark_grid() if op.family != "clean"]
    cases = [(_apply(p.image, op), p.image) for p in photos for op in grid]
    best, rows = tune_classic(cases, psnr)
    result = {"params": best.to_dict(), "score": "mean PSNR (luma) over the train cases of the 18 degraded operators",
              "n_cases": len(cases),
              "photos": [str(p.path.relative_to(datasets_root())) for p in photos], "grid": rows,
              "command": f"face2scene eval-photos --tune-classic --photos {n_photos} -o {out_file}"}
    write_bytes_atomic(out_file, json.dumps(result, indent=1).encode())
    return result


def format_table(res: dict) -> str:
    """A Markdown table: mean PSNR / SSIM / face / face-excluded per column, then PSNR per family."""
    lines = ["| column | PSNR | SSIM | face PSNR | face-excluded PSNR |", "|---|---|---|---|---|"]
    for c in res["columns"]:
        o = res["overall"][c]
        get = lambda m: f"{o[m]['mean']:.2f}" if m in o else "-"  # noqa: E731
        lines.append(f"| {c} | {get('psnr')} | {o['ssim']['mean']:.4f} | {get('face_psnr')} | {get('noface_psnr')} |")
    lines += ["", "| column | " + " | ".join(res["families"]) + " |", "|---|" + "---|" * len(res["families"])]
    for c in res["columns"]:
        pf = res["per_family"][c]
        # a column run on a subset of the cases (the Real-ESRGAN peer) has no figure for some families
        lines.append(f"| {c} | " + " | ".join(f"{pf[f]['psnr']:.2f}" if "psnr" in pf.get(f, {}) else "-"
                                              for f in res["families"]) + " |")
    lines += ["", "over the degraded operators (clean excluded):",
              "| column | PSNR | SSIM | face-excluded PSNR |", "|---|---|---|---|"]
    for c in res["columns"]:
        o = res.get("overall_degraded", {}).get(c, {})
        if "psnr" in o:
            lines.append(f"| {c} | {o['psnr']['mean']:.2f} | {o['ssim']['mean']:.4f} | "
                         f"{o['noface_psnr']['mean']:.2f} |" if "noface_psnr" in o else
                         f"| {c} | {o['psnr']['mean']:.2f} | {o['ssim']['mean']:.4f} | - |")
    lines.append("")
    for key, v in res.get("paired_degraded", {}).items():
        if "psnr" in v:
            p = v["psnr"]
            lines.append(f"degraded {key}: PSNR {p['mean']:+.2f} dB [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] "
                         f"wins {p['wins']}/{p['n']}")
    if "clean_psnr_vs_input" in res:
        lines.append("clean photos, PSNR(output, input): " + ", ".join(
            f"{c} {v['mean']:.2f} (min {v['min']:.2f})" for c, v in res["clean_psnr_vs_input"].items()))
    lines.append("")
    for key, v in res["paired"].items():
        p = v["psnr"]
        lines.append(f"{key}: PSNR {p['mean']:+.2f} dB [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] "
                     f"wins {p['wins']}/{p['n']}")
    return "\n".join(lines)


__all__ = ["add_ablation", "add_peer", "spread_cases", "run_benchmark", "merge_shards", "face_pairs", "fadex_on_photos", "summarise", "select_photos", "identity_photos",
           "tune_classic_on_train", "measure", "format_table", "fit_pixels"]
