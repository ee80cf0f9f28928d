"""Write configs/split.json: the train / held-out split of ../shared/datasets used by every training run.

    python tools/make_split.py            # deterministic: rebuilds the same file

Rules (by identity and by image; the held-out part is never trained on):
- scenes: Kodak24 and CSet5 are held out (standard benchmarks); CBSD68, McMaster and CSet14 are for training.
- FFHQ-style aligned faces (faces_ffhq): files 00000-00079 train, 00080-00099 held out.
- identities (deepface p01..p13, face-api.js characters, dlib johns): every second identity, sorted by name,
  is held out, with all of its images; group photos with several labelled identities are held out.
- faces_real (real degraded photos, no ground truth) are evaluation-only.
- scenes added later (bsds500, CUrban100, LIVE1, the people photos of the pose repos...): within each source folder
  and kind, sorted by path, every fourth image is held out, so people photos are in both halves; scikit-image's
  astronaut.png (the shipped example) is held out.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
#: scenes_clean folders of the first split; every other folder there was added later (split 3:1 per kind)
ORIGINAL_SCENE_SOURCES = ("ffdnet", "denoising_datasets/CSet14", "denoising_datasets/CSet5")


def scene_source(path: str) -> str:
    """``scenes_clean/<source>/...`` -> source (``denoising_datasets/<set>`` for that repo's several sets)."""
    parts = path.split("/")
    return "/".join(parts[1:3]) if parts[1] == "denoising_datasets" else parts[1]


def main() -> None:
    rows = list(csv.DictReader(open(DATASETS / "manifest.csv")))
    ids = sorted({r["identity"] for r in rows if r["identity"] and ";" not in r["identity"]})
    held_ids = set(ids[1::2])
    split: dict[str, list[str]] = {"train": [], "heldout": []}
    added: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r["path"].startswith("scenes_clean/") and scene_source(r["path"]) not in ORIGINAL_SCENE_SOURCES:
            added.setdefault((scene_source(r["path"]), r["kind"]), []).append(r["path"])
    added_held = {p for paths in added.values() for i, p in enumerate(sorted(paths)) if i % 4 == 1}
    for r in rows:
        p, cat = r["path"], r["path"].split("/")[0]
        if cat == "scenes_clean" and scene_source(p) not in ORIGINAL_SCENE_SOURCES:
            held = p in added_held or p.endswith("/astronaut.png")
        elif cat == "scenes_clean":
            held = "/Kodak24/" in p or "/CSet5/" in p
        elif cat == "faces_ffhq":
            held = int(Path(p).stem) >= 80
        elif cat == "faces_real":
            held = True
        elif r["identity"]:
            held = ";" in r["identity"] or r["identity"] in held_ids
        else:
            held = True
        split["heldout" if held else "train"].append(p)
    out = {
        "description": __doc__.strip().splitlines()[0],
        "rules": [ln.strip("- ") for ln in __doc__.split("Rules")[1].strip().splitlines()[1:] if ln.strip()],
        "heldout_identities": sorted(held_ids),
        "train_identities": sorted(set(ids) - held_ids),
        **{k: sorted(v) for k, v in split.items()},
    }
    dest = ROOT / "configs" / "split.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{dest}: {len(out['train'])} train, {len(out['heldout'])} held out")


if __name__ == "__main__":
    main()
