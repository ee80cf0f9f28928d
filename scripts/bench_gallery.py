"""Gallery benchmarks of `face2scene restore` with the embedded model (prints figures; not a test).

    python scripts/bench_gallery.py big -o /tmp/f2s_big          # one ~50-megapixel photo, tiled automatically
    python scripts/bench_gallery.py gallery -n 50 -o /tmp/f2s_g   # 50 mixed-size photos from shared/datasets

Each runs the real command line in a child process (`python -m face2scene_core.cli restore ...`) and reports
wall time, photos per minute, the start-up share (wall time not spent inside a photo: interpreter, imports,
model loading, exit) and the child's peak resident memory; `gallery` also prints the peak after each tenth of
the photos (from the JSON-lines report), which must stay flat as the gallery grows. Figures depend on the
machine's load: say which machine and what else ran when you quote them. Every run restores into an emptied
``OUT/restored`` (the command line resumes a folder it has written before, which would time nothing).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from face2scene_core.imageio import load_photo, save_image  # noqa: E402
from face2scene_core.training.data import default_datasets_dir  # noqa: E402

DATA = default_datasets_dir()
DEEPFACE = DATA / "faces_identity/deepface/tests/unit/dataset"


def _fresh(dest: Path) -> Path:
    """The bench's own output folder, emptied: a restore into a folder that holds earlier results skips them."""
    shutil.rmtree(dest, ignore_errors=True)
    return dest


def _run(args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, child peak RSS in MB, exit code) of one CLI call."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "face2scene_core.cli", *args], cwd=REPO)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, peak_mb, proc.returncode


def _records(journal: Path) -> list[dict]:
    return [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]


def bench_big(out: Path, scale: float, extra: list[str]) -> dict:
    """img49 (deepface p03, 4352x2903) upscaled by ``scale`` (2 -> 8704x5806, 50.5 MP), references img9 + img47."""
    out.mkdir(parents=True, exist_ok=True)
    src = out / "big.jpg"
    if not src.exists():
        img = load_photo(DEEPFACE / "img49.jpg").rgb
        big = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                         interpolation=cv2.INTER_CUBIC)
        save_image(src, big, quality=92)
    refs = out / "refs"
    if not refs.exists():
        for n in ("img9.jpg", "img47.jpg"):
            save_image(refs / n, load_photo(DEEPFACE / n).rgb)
    dest = _fresh(out / "restored")
    wall, peak, code = _run(["restore", str(src), "--refs", str(refs), "-o", str(dest), *extra])
    rec = [r for r in _records(dest / "big.report.jsonl") if r.get("event") == "photo"][-1]
    w, h = rec.get("report", {}).get("size", [0, 0])
    figures = {"photo": f"{w}x{h}", "megapixels": round(w * h / 1e6, 1), "exit_code": code, "ok": rec["ok"],
               "wall_s": round(wall, 1), "photo_s": rec["seconds"], "tile_px": rec.get("report", {}).get("tile_px"),
               "peak_rss_mb": round(peak), "error": rec.get("error")}
    print(json.dumps(figures, indent=2))
    return figures


def _gallery_sources(n: int) -> list[Path]:
    """``n`` photos with faces of mixed sizes (manifest kind scene_with_faces), round-robin over sources."""
    rows = list(csv.DictReader((DATA / "manifest.csv").open()))
    rows = [r for r in rows if r["kind"] == "scene_with_faces"]
    rows.sort(key=lambda r: (int(r["width"]) * int(r["height"]), r["path"]))
    idx = np.linspace(0, len(rows) - 1, n).round().astype(int)  # spread over the sizes
    return [DATA / rows[i]["path"] for i in idx]


def bench_gallery(out: Path, n: int, extra: list[str]) -> dict:
    gallery = out / "gallery"
    if not gallery.exists():
        for i, src in enumerate(_gallery_sources(n)):
            dst = gallery / f"{i:03d}_{src.name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    dest = _fresh(out / "restored")
    wall, peak, code = _run(["restore", str(gallery), "-o", str(dest), "--face", "largest", "--no-face-ok", *extra])
    photos = [r for r in _records(dest / "face2scene_report.jsonl") if r.get("event") == "photo"]
    inside = sum(r["seconds"] for r in photos)
    mp = [r["report"]["size"][0] * r["report"]["size"][1] / 1e6 for r in photos if r.get("ok")]
    series = [r.get("peak_rss_mb") for r in photos]
    tenths = [series[max(0, round(k * len(series) / 10) - 1)] for k in range(1, 11)]
    figures = {"photos": len(photos), "restored": sum(1 for r in photos if r.get("ok")), "exit_code": code,
               "megapixels_min_median_max": [round(min(mp), 2), round(float(np.median(mp)), 2), round(max(mp), 2)]
               if mp else None,
               "wall_s": round(wall, 1), "photos_per_min": round(len(photos) / wall * 60, 1),
               "startup_share": round(1 - inside / wall, 3), "child_peak_rss_mb": round(peak),
               "peak_rss_mb_after_each_tenth": tenths,
               "failures": {Path(r["input"]).name: r["error"] for r in photos if not r.get("ok")}}
    print(json.dumps(figures, indent=2))
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["big", "gallery"])
    ap.add_argument("-o", "--out", required=True, help="work folder (inputs are made here once)")
    ap.add_argument("-n", type=int, default=50, help="gallery size")
    ap.add_argument("--scale", type=float, default=2.0, help="big: upscale factor of the 12.6 MP source")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--models", help="a folder with fadex/ and restorer.safetensors (e.g. tiny random models: the "
                    "same code path, cheaper tiles) instead of the embedded model")
    ap.add_argument("--workers", default="1", help="passed to face2scene restore")
    a = ap.parse_args()
    extra = ["--workers", a.workers]
    if a.models:
        extra += ["--fadex", str(Path(a.models) / "fadex"), "--adapter", str(Path(a.models) / "restorer.safetensors")]
    figures = bench_big(Path(a.out), a.scale, extra) if a.what == "big" else bench_gallery(Path(a.out), a.n, extra)
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
