"""Paired statistics: a method against a reference on the same cases (photo x operator)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as _st


def paired(method: Sequence[float], reference: Sequence[float], *, tie: float = 1e-9) -> dict:
    """Mean difference ``method - reference`` with a 95% t interval, and win / tie / loss counts.

    Infinite values (identical images give PSNR = inf) are capped at 100 dB first, so a case where both
    are identical counts as a tie.
    """
    a = np.minimum(np.asarray(method, dtype=np.float64), 100.0)
    b = np.minimum(np.asarray(reference, dtype=np.float64), 100.0)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired() needs two equally long, non-empty lists, got {a.shape} and {b.shape}")
    d = a - b
    mean = float(d.mean())
    if d.size > 1 and d.std(ddof=1) > 0:
        half = float(_st.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    else:
        half = 0.0 if d.size > 1 else float("nan")
    return {
        "mean": mean,
        "ci95": [mean - half, mean + half],
        "n": int(d.size),
        "wins": int((d > tie).sum()),
        "ties": int((np.abs(d) <= tie).sum()),
        "losses": int((d < -tie).sum()),
    }


def summary(values: Sequence[float]) -> dict:
    """Mean (PSNR inf capped at 100 dB), standard deviation, min, max and count."""
    v = np.minimum(np.asarray(values, dtype=np.float64), 100.0)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


__all__ = ["paired", "summary"]
