"""What must the HQ face carry for FaDeX to name the operator? (docs/results.md, Ref-FR retrieval section)

Builds the held-out Ref-FR grid (13 identities x 2 GT photos x 8 operators, as
``python -m face2scene_core.evaluation.reffr``) at ``--size`` px, then embeds (LQ, HQ) with the shipped FaDeX for
HQ = variants of the ground truth and of the Ref-FR output, and prints the all-8-operator top-1 of each:

    python scripts/fadex_hq_probe.py --size 256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from face2scene_core.degradation import degrade_image  # noqa: E402
from face2scene_core.fadex.model import FaDeX  # noqa: E402
from face2scene_core.pipeline import EMBEDDED_DIR  # noqa: E402
from face2scene_core.reffr import default_reffr  # noqa: E402
from face2scene_core.evaluation.reffr import (  # noqa: E402
    default_degrade_ops, fadex_retrieval, heldout_cases, load_heldout_faces,
)
from face2scene_core.reffr.transfer import ReferenceTransferRefFR  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    ids = load_heldout_faces(size=args.size)
    ops = default_degrade_ops(4, 0)
    transfer, shipped = ReferenceTransferRefFR.for_size(args.size), default_reffr(args.size)
    grid: dict[str, list[np.ndarray]] = {k: [] for k in ("lq", "gt", "transfer", "shipped")}
    for _, gt_face, ref_faces, op_name in heldout_cases(ids, ops):
        refs = [r.image for r in ref_faces]
        lq = degrade_image(gt_face.image, ops[op_name])
        for key, img in (("lq", lq), ("gt", gt_face.image), ("transfer", transfer.restore(lq, refs)),
                         ("shipped", shipped.restore(lq, refs))):
            grid[key].append(img)
    gt = np.stack(grid["gt"]).astype(np.float32)
    tr = np.stack(grid["transfer"]).astype(np.float32)
    variants = {
        "ground truth": grid["gt"],
        "ground truth, Gaussian blur sigma 4 px": [cv2.GaussianBlur(g, (0, 0), 4) for g in grid["gt"]],
        "the LQ face itself": grid["lq"],
        "transfer output": grid["transfer"],
        "transfer output + 25% ground truth": list(np.clip(0.25 * gt + 0.75 * tr + 0.5, 0, 255).astype(np.uint8)),
        "shipped Ref-FR output (transfer + refiner)": grid["shipped"],
    }
    fadex = FaDeX.from_pretrained(str(EMBEDDED_DIR / "fadex"), use_safetensors=True).eval()
    for name, hqs in variants.items():
        emb = [fadex.encode_pair(lq, hq).embedding[0].float().cpu().numpy() for lq, hq in zip(grid["lq"], hqs)]
        top1 = fadex_retrieval(list(ops), {"hq": emb})["hq"]["all"]["top1_accuracy"]
        print(f"{name:45s} all-8 top-1 {100 * top1:5.1f}%", flush=True)


if __name__ == "__main__":
    main()
