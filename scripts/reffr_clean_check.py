"""Does the offline Ref-FR leave a clean or lightly degraded face alone? 6 held-out identities (first aligned photo of
each at 512 px, 2 other photos as references), grid operators applied to the aligned face; PSNR of the transfer
alone and of the transfer + each refiner, against the LQ face and against the ground truth.

    python scripts/reffr_clean_check.py REFINER_DIR [REFINER_DIR ...]     # e.g. face2scene_core/weights/reffr_refine
"""
import sys

import numpy as np

from face2scene_core.degradation.families import benchmark_grid
from face2scene_core.evaluation.metrics import psnr
from face2scene_core.evaluation.photos import _apply
from face2scene_core.evaluation.reffr import load_heldout_faces
from face2scene_core.reffr import ReferenceTransferRefFR, RefinedRefFR

grid = {o.name: o for o in benchmark_grid()}
ids = sorted(load_heldout_faces(size=512).items())[:6]
models = {"transfer": ReferenceTransferRefFR.for_size(512)}
models.update({d: RefinedRefFR.from_pretrained(d, size=512) for d in sys.argv[1:]})
for name in ("clean", "jpeg_q60", "jpeg_q30", "gauss_colour_s15", "blur_s2_jpeg40"):
    rows = {m: [] for m in models}
    lq_gt = []
    for _, faces in ids:
        face, refs = faces[0], [g.image for g in faces[1:3]]
        lq = face.image if name == "clean" else _apply(face.image, grid[name])
        lq_gt.append(min(psnr(lq, face.image), 100))
        for m, model in models.items():
            out = model.restore(lq, refs)
            rows[m].append((min(psnr(out, lq), 100), min(psnr(out, face.image), 100)))
    print(f"{name:18} LQ vs GT {np.mean(lq_gt):6.2f}  " + "  ".join(
        f"{m}: vs LQ {np.mean([r[0] for r in v]):6.2f} vs GT {np.mean([r[1] for r in v]):6.2f}" for m, v in rows.items()))
