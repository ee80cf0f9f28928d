"""The classic baseline: OpenCV non-local-means denoising then an unsharp mask, strength tuned on the train split.

``classic_restore(img, h, amount)``: ``fastNlMeansDenoisingColored`` with filter strength ``h`` (luma and colour;
``h = 0`` skips it), then ``(1 + amount) * x - amount * GaussianBlur(x, sigma)``. ``h = 0, amount = 0`` is the
identity, so a tuned baseline is never worse than the input on the photos it was tuned on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

H_GRID = (0.0, 3.0, 5.0, 7.0, 10.0, 14.0)
AMOUNT_GRID = (0.0, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class ClassicParams:
    """Filter strength ``h`` of non-local means (0 = off) and unsharp ``amount`` with blur ``sigma`` (pixels)."""

    h: float = 0.0
    amount: float = 0.0
    sigma: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def classic_restore(image: np.ndarray, params: ClassicParams) -> np.ndarray:
    """Apply the baseline to an RGB ``uint8 (H, W, 3)`` image; returns the same shape and dtype."""
    out = np.ascontiguousarray(image)
    if params.h > 0:
        out = cv2.fastNlMeansDenoisingColored(out, None, params.h, params.h, 7, 21)
    if params.amount > 0:
        x = out.astype(np.float32)
        blur = cv2.GaussianBlur(x, (0, 0), params.sigma)
        out = np.clip((1.0 + params.amount) * x - params.amount * blur + 0.5, 0, 255).astype(np.uint8)
    return out


def tune_classic(cases: Sequence[tuple[np.ndarray, np.ndarray]], score: Callable[[np.ndarray, np.ndarray], float],
                 *, h_grid: Sequence[float] = H_GRID, amount_grid: Sequence[float] = AMOUNT_GRID) -> tuple[ClassicParams, list[dict]]:
    """The grid point with the best mean ``score(restored, gt)`` over ``cases`` of ``(lq, gt)``, and every row."""
    rows = []
    for h in h_grid:  # the denoised images are made once per h; the unsharp amounts reuse them
        denoised = [classic_restore(lq, ClassicParams(h=float(h))) for lq, _ in cases]
        for amount in amount_grid:
            p = ClassicParams(h=float(h), amount=float(amount))
            sharp = ClassicParams(amount=float(amount), sigma=p.sigma)
            vals = [min(score(classic_restore(d, sharp), gt), 100.0) for d, (_, gt) in zip(denoised, cases)]
            rows.append({**p.to_dict(), "mean": float(np.mean(vals))})
    best = max(rows, key=lambda r: r["mean"])
    return ClassicParams(h=best["h"], amount=best["amount"], sigma=best["sigma"]), rows


__all__ = ["ClassicParams", "classic_restore", "tune_classic", "H_GRID", "AMOUNT_GRID"]
