"""Which tokens does the restorer need? Two held-out photos (0.25 MP), operators clean / JPEG q60 / q30 / noise:
the embedded model restored with the tokens of the (LQ, ground-truth face) pair - what training sees - and of the
(LQ, Ref-FR face) pair - what a user gets. PSNR to the ground truth.

    python scripts/token_source_check.py
"""
import numpy as np, torch
from face2scene_core.evaluation.photos import Columns, _apply, select_photos
from face2scene_core.pipeline import Face2ScenePipeline, _Timer
from face2scene_core.degradation.families import benchmark_grid
from face2scene_core.faces.align import align_face, native_pair
from face2scene_core.evaluation.metrics import psnr
pipe = Face2ScenePipeline.from_paths(device="cpu"); cols = Columns(pipe)
grid = {o.name: o for o in benchmark_grid()}
for photo in select_photos(2, max_pixels=250_000):
    face, ref_al = pipe.choose_face(photo.image, photo.refs, "reference", _Timer(), {})
    for name in ("clean", "jpeg_q60", "jpeg_q30", "gauss_colour_s15"):
        lq = _apply(photo.image, grid[name])
        al = align_face(lq, face, size=512); gt_al = align_face(photo.image, face, size=512)
        with torch.no_grad():
            a, b = native_pair(lq, al, gt_al.image)
            t_gt = pipe.restorer.tokens_from_features(pipe.fadex.encode_pair(a, b).features)
            hq = pipe.reffr.restore(al.image, [r.image for r in ref_al])
            a, b = native_pair(lq, al, hq)
            t_rf = pipe.restorer.tokens_from_features(pipe.fadex.encode_pair(a, b).features)
        o_gt = cols.restore(pipe.restorer, lq, t_gt); o_rf = cols.restore(pipe.restorer, lq, t_rf)
        print(photo.path.name, name, "input %.2f  GT-pair tokens %.2f  Ref-FR tokens %.2f" % (psnr(lq, photo.image), psnr(o_gt, photo.image), psnr(o_rf, photo.image)))
