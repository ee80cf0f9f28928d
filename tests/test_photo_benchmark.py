"""The photo benchmark's bookkeeping: which cases get the slow Real-ESRGAN columns added later (`--add-peer`)."""

from __future__ import annotations

from collections import Counter

from face2scene_core.evaluation.photos import spread_cases


def _rows(photos=6, families=("blur", "clean", "jpeg", "noise"), ops_per_family=2):
    return [{"photo": f"p{p}.png", "family": fam, "op": f"{fam}_{k}"}
            for p in range(photos) for fam in families for k in range(ops_per_family)]


def test_peer_cases_cover_every_family_and_spread_over_photos():
    picked = spread_cases(_rows(), 8)
    assert len(picked) == 8
    assert Counter(r["family"] for r in picked) == {"blur": 2, "clean": 2, "jpeg": 2, "noise": 2}
    # 8 cases over 6 photos: no photo twice before every photo has one
    counts = Counter(r["photo"] for r in picked)
    assert len(counts) == 6 and max(counts.values()) == 2
    assert len({(r["photo"], r["op"]) for r in picked}) == 8  # no case twice
    # two cases of a family with two operators: one of each
    assert len({r["op"] for r in picked}) == 8


def test_peer_cases_are_deterministic_and_never_more_than_asked_or_available():
    rows = _rows()
    assert spread_cases(rows, 5) == spread_cases(list(rows), 5)
    assert len(spread_cases(rows, 5)) == 5
    small = _rows(photos=1, families=("clean",), ops_per_family=3)
    assert len(spread_cases(small, 10)) == 3
    assert spread_cases([], 4) == []
