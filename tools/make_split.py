"""Write configs/split.json: the train / held-out split of ../shared/datasets used by every training run.

    python tools/make_split.py            # deterministic: rebuilds the same file

Rules (by identity and by image; the held-out part is never trained on):
- scenes: Kodak24 and CSet5 are held out (standard benchmarks); CBSD68, McMaster and CSet14 are for training.
- FFHQ-style aligned faces (faces_ffhq): files 00000-00079 train, 00080-00099 held out.
- identities (deepface p01..p13, face-api.js characters, dlib johns): every second identity, sorted by name,
  is held out, with all of its images; group photos with several labelled identities are held out.
- faces_real (real degraded photos, no ground truth) are evaluation-only.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"


def main() -> None:
    rows = list(csv.DictReader(open(DATASETS / "manifest.csv")))
    ids = sorted({r["identity"] for r in rows if r["identity"] and ";" not in r["identity"]})
    held_ids = set(ids[1::2])
    split: dict[str, list[str]] = {"train": [], "heldout": []}
    for r in rows:
        p, cat = r["path"], r["path"].split("/")[0]
        if cat == "scenes_clean":
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
