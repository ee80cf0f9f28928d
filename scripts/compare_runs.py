"""Two merged photo-benchmark runs case by case: the figures docs/results.md quotes for a new model.

    python scripts/compare_runs.py NEW/photos.json [OLD/photos.json]

Prints the new run's columns, paired differences, per family and per operator gains, the clean photos; with OLD:
new - old on the same (photo, operator) cases (their inputs must be identical: same photos, operators and seeds), and
the shipped model against the Real-ESRGAN columns that OLD measured on some cases (the peer's output depends only on
the input, so a run made with --no-peer borrows them).
"""
import json
import sys

import numpy as np

from face2scene_core.evaluation.stats import paired


def interval(new, old) -> str:
    """``new - old`` with the benchmark's own paired 95% t interval."""
    p = paired(new, old)
    return f"{p['mean']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]"


def main(new_file: str, old_file: str | None = None) -> None:
    d = json.load(open(new_file))
    for col, o in d["overall_degraded"].items():
        clean = d["clean_psnr_vs_input"].get(col, {})
        print(f"{col:11s} PSNR {o['psnr']['mean']:.2f} SSIM {o['ssim']['mean']:.4f} face-excluded "
              f"{o['noface_psnr']['mean']:.2f}  clean {clean.get('mean', float('inf')):.2f} / {clean.get('min', float('inf')):.2f}")
    for key, v in d["paired_degraded"].items():
        for m in ("psnr", "ssim", "noface_psnr") if key == "shipped-input" else ("psnr",):
            x = v[m]
            print(f"{key:20s} {m:11s} {x['mean']:+.3f} [{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}] "
                  f"better {x['wins']} / {x['n']}, worse {x['losses']}")
    fam, ops, cases = d["per_family"], d["per_operator"], d["cases"]
    print("per family, input -> shipped (unchecked):", ", ".join(
        f"{f} {fam['input'][f]['psnr']:.2f} -> {fam['shipped'][f]['psnr']:.2f} ({fam['unchecked'][f]['psnr']:.2f})"
        for f in d["families"] if f != "clean"))
    for op in ops["input"]:
        if op != "clean":
            rows = [r for r in cases if r["op"] == op]
            better = sum(r["shipped"]["psnr"] > r["input"]["psnr"] for r in rows)
            print(f"  {op:18s} {ops['shipped'][op] - ops['input'][op]:+.2f} ({better} / {len(rows)} better; "
                  f"unchecked {ops['unchecked'][op] - ops['input'][op]:+.2f})")
    print("clean photos, PSNR to the input:", sorted(round(r["shipped"]["psnr"], 1) for r in cases if r["op"] == "clean"))
    if old_file is None:
        return
    old = {(r["photo"], r["op"]): r for r in json.load(open(old_file))["cases"]}
    same = [(r, old[(r["photo"], r["op"])]) for r in cases if (r["photo"], r["op"]) in old]
    bad = [r["photo"] + " " + r["op"] for r, o in same if abs(r["input"]["psnr"] - o["input"]["psnr"]) > 1e-6]
    if bad:
        raise SystemExit(f"the two runs degraded {len(bad)} cases differently (e.g. {bad[0]}): not the same cases")
    deg = [(r, o) for r, o in same if r["op"] != "clean"]
    new_s, old_s = (np.array([case["shipped"]["psnr"] for case in side]) for side in zip(*deg))
    diff = new_s - old_s
    print(f"new - old on {len(diff)} degraded cases: {interval(new_s, old_s)} dB, better {(diff > 0).sum()}, "
          f"worse {(diff < 0).sum()}")
    print("  per family:", ", ".join(f"{f} {np.mean([r['shipped']['psnr'] - o['shipped']['psnr'] for r, o in deg if r['family'] == f]):+.2f}"
                                     for f in d["families"] if f != "clean"))
    peer = [(r, o) for r, o in deg if "resr_h" in o and "resr_h" not in r]
    if peer:
        s = np.array([r["shipped"]["psnr"] for r, _ in peer])
        for col, name in (("resr_h", "1/2"), ("resr_q", "1/4")):
            h = np.array([o[col]["psnr"] for _, o in peer])
            print(f"Real-ESRGAN at {name} scale (from OLD) on {len(peer)} degraded cases: {h.mean():.2f} dB, input "
                  f"{np.mean([r['input']['psnr'] for r, _ in peer]):.2f}, new shipped {s.mean():.2f}; new - peer "
                  f"{interval(s, h)} dB (better {(s > h).sum()} / {len(s)})")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
