"""Restore photos of any size with memory bounded by a tile, not by the photo.

Above :data:`AUTO_TILE_ABOVE` pixels the photo is cut into overlapping square tiles (side from the
restorer's :attr:`~face2scene_core.restorer.model.OneStepRestorer.multiple`), each tile goes through
``restorer.restore`` on its own (encoder, UNet and decoder alike), and the outputs are blended with the
raised-cosine windows of :mod:`face2scene_core.restorer.tiling`. Tiles are processed one row (strip) at a
time and finished rows are written straight into the output array, so besides the input and output photos
only one strip of float accumulators is held: a 50-megapixel photo needs about the memory of a 1-megapixel
one plus its two ``uint8`` copies.

Images are ``uint8`` or ``uint16`` ``(H, W, 3)`` numpy arrays; the result has the input's dtype.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

AUTO_TILE_PX = 1280  # largest tile side in pixels (rounded down to the restorer's multiple; tiles are then fitted)
# 1280 rather than 2048: 4096^2 then runs as 4 x 4 fitted tiles of 1120 px (1.20x its pixels) instead of 3 x 3 of 1456
# (1.14x), and is still ~6% faster, because the network's per-pixel rate drops on tiles above ~1.2 MP (bench: UNet
# 9.05-9.42 s vs 9.80-10.06 s at 16.8 MP on the 2-core Xeon); memory is bounded by a smaller tile too.
MAX_DEFAULT_OVERLAP = 128  # default overlap: tile / 8, at most this (the seams need the network's reach, not more)
AUTO_TILE_ABOVE = 2048 * 2048  # photos with more pixels than this are tiled when no tile size is given


def auto_tile_size(restorer, height: int, width: int) -> int | None:
    """The tile side used when none is given: ``None`` (whole photo) up to :data:`AUTO_TILE_ABOVE` pixels,
    else :data:`AUTO_TILE_PX` rounded down to a multiple of ``restorer.multiple`` (at least two multiples)."""
    if height * width <= AUTO_TILE_ABOVE:
        return None
    m = int(restorer.multiple)
    return max(2 * m, AUTO_TILE_PX // m * m)


def estimate_peak_bytes(height: int, width: int, tile: int | None, *, deep: bool = False) -> int:
    """Rough working memory of :func:`restore_array` beyond the models: the input and output photos, one
    strip of float accumulators and a tile's activations (about 80 float32 values per tile pixel for the
    embedded v4 model: a 4.2 MP photo whole peaked at 2.16 GB with ~1 GB of models, a 50 MP one in 2048 px tiles at
    2.7 GB). An estimate for planning, not a limit."""
    photo = height * width * 3 * (2 if deep else 1)
    side = tile or max(height, width)
    rows = min(side, height)
    strip = rows * width * 4 * 8  # accumulator, carry, weights, tile copies (float32)
    work = (min(side, height) * min(side, width)) * 4 * 80
    return 2 * photo + strip + work


def _to_tensor(a: np.ndarray, device) -> torch.Tensor:
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    t = torch.from_numpy(np.ascontiguousarray(a).astype(np.float32) / scale)
    return t.permute(2, 0, 1)[None].to(device)


def _from_float(y: np.ndarray, dtype) -> np.ndarray:
    top = 65535.0 if dtype == np.uint16 else 255.0
    return (np.clip(y, 0.0, 1.0) * top + 0.5).astype(dtype)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    from .restorer.tiling import tile_starts

    return tile_starts(length, tile, overlap)


def _window(starts: list[int], size: int, i: int) -> np.ndarray:
    """1-D blending weights of tile ``i`` (raised cosine over the parts shared with its neighbours)."""
    from .restorer.tiling import ramp

    before = max(starts[i - 1] + size - starts[i], 0) if i > 0 else 0
    after = max(starts[i] + size - starts[i + 1], 0) if i + 1 < len(starts) else 0
    return ramp(size, before, after).numpy()


def restore_array(restorer, image: np.ndarray, tokens: torch.Tensor | None = None, *,
                  tile_size: int | None = None, tile_overlap: int | None = None, cfg_scale: float | None = None,
                  color_fix: str | None = None, timings: dict | None = None,
                  on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Restore ``image`` (``uint8``/``uint16 (H, W, 3)``) with ``restorer.restore``; same shape and dtype out.

    ``tile_size``: pixels (rounded down to ``restorer.multiple``); ``None`` = :func:`auto_tile_size`.
    ``tile_overlap``: pixels shared by neighbouring tiles (default ``tile_size // 8`` up to
    :data:`MAX_DEFAULT_OVERLAP`; at most half a tile).
    ``on_tile(done, total)`` is called after each tile.
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image must be uint8 or uint16 (H, W, 3), got {arr.dtype} {arr.shape}")
    h, w = arr.shape[:2]
    m = int(restorer.multiple)
    tile = auto_tile_size(restorer, h, w) if tile_size is None else int(tile_size) // m * m
    if tile is not None and tile < 2 * m:
        raise ValueError(f"tile_size must be >= {2 * m} px for this model, got {tile_size}")
    kw = dict(cfg_scale=cfg_scale, color_fix=color_fix, timings=timings, progress=False)
    device = restorer.device
    if tile is None or (h <= tile and w <= tile):
        y = restorer.restore(_to_tensor(arr, device), tokens, **kw)
        out = _from_float(y[0].permute(1, 2, 0).float().cpu().numpy(), arr.dtype)
        if on_tile:
            on_tile(1, 1)
        return out
    overlap = min(tile // 8, MAX_DEFAULT_OVERLAP) if tile_overlap is None else int(tile_overlap)
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"tile_overlap must be in [0, {tile // 2}] px for tile_size {tile}, got {overlap}")
    from .restorer.tiling import fit_tile

    # as few tiles as `tile` needs per side, shrunk to cover the photo with little more than their overlaps
    th, tw = fit_tile(h, tile, overlap, m), fit_tile(w, tile, overlap, m)
    ys, xs = _starts(h, th, overlap), _starts(w, tw, overlap)
    wxs = [_window(xs, tw, i) for i in range(len(xs))]
    out = np.empty_like(arr)
    total, done = len(ys) * len(xs), 0
    carry: np.ndarray | None = None  # (rows, W, 4): weighted sums + weight of rows shared with the next strip
    log.info("restoring %dx%d in %d tiles of %d px (overlap %d)", w, h, total, tile, overlap)
    for iy, y0 in enumerate(ys):
        acc = np.zeros((th, w, 4), np.float32)
        if carry is not None:
            acc[: carry.shape[0]] = carry
        wy = _window(ys, th, iy)
        for ix, x0 in enumerate(xs):
            t = restorer.restore(_to_tensor(arr[y0:y0 + th, x0:x0 + tw], device), tokens, **kw)
            t = t[0].permute(1, 2, 0).float().cpu().numpy()  # th, tw, 3
            wgt = (wy[:, None] * wxs[ix][None, :]).astype(np.float32)
            acc[:, x0:x0 + tw, :3] += t * wgt[..., None]
            acc[:, x0:x0 + tw, 3] += wgt
            done += 1
            if on_tile:
                on_tile(done, total)
        final = (ys[iy + 1] - y0) if iy + 1 < len(ys) else th  # rows no later strip touches
        out[y0:y0 + final] = _from_float(acc[:final, :, :3] / acc[:final, :, 3:], arr.dtype)
        carry = acc[final:].copy() if final < th else None
    return out


__all__ = ["AUTO_TILE_ABOVE", "AUTO_TILE_PX", "MAX_DEFAULT_OVERLAP", "auto_tile_size", "estimate_peak_bytes", "restore_array"]
