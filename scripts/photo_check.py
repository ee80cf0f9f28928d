"""Quick photo check: 3 held-out photos (0.25 MP) x the 19 grid operators, PSNR of the input, the model with its own
tokens, with another operator's tokens (operator k + 9 of the grid) and without tokens. The same photos, tokens and
shuffle as `face2scene eval-photos --photos 3 --max-pixels 250000` (which adds the other columns and metrics).

    python scripts/photo_check.py ADAPTER|- FADEX_DIR|- [--part train] [--photos N] [--max-pixels P] [--quick]
    # '-' = the embedded one; --quick: only the model with its own tokens (no shuffled / no-token columns)

Choose models with `--part train` (photos of train identities, never seen by the benchmark); the default held-out
photos are the benchmark's first 3 and only for a look at a model already chosen.
"""
import argparse, numpy as np
from face2scene_core.evaluation.photos import Columns, _apply, select_photos
from face2scene_core.pipeline import Face2ScenePipeline
from face2scene_core.degradation.families import benchmark_grid
from face2scene_core.evaluation.metrics import psnr
ap = argparse.ArgumentParser()
ap.add_argument("adapter"); ap.add_argument("fadex")
ap.add_argument("--part", default="heldout", choices=["heldout", "train"])
ap.add_argument("--photos", type=int, default=3)
ap.add_argument("--max-pixels", type=int, default=250_000, help="photo size (the benchmark's is 1000000)")
ap.add_argument("--quick", action="store_true", help="only the model with its own tokens")
args = ap.parse_args()
adapter, fadex = args.adapter, args.fadex
pipe = Face2ScenePipeline.from_paths(adapter=adapter if adapter != "-" else None, fadex=fadex if fadex != "-" else None, device="cpu")
cols = Columns(pipe)
grid = benchmark_grid()
photos = select_photos(args.photos, args.part, max_pixels=args.max_pixels)
res = {}
for photo in photos:
    lqs = [_apply(photo.image, op) for op in grid]
    toks = [cols.tokens(lq, photo.refs)[0] for lq in lqs]
    for k, op in enumerate(grid):
        out = cols.restore(pipe.restorer, lqs[k], toks[k])
        if args.quick:
            sh = nt = lqs[k]
        else:
            sh = cols.restore(pipe.restorer, lqs[k], toks[(k + 9) % len(grid)])
            nt = cols.restore(pipe.restorer, lqs[k], None)
        res.setdefault(op.name, []).append((psnr(lqs[k], photo.image), psnr(out, photo.image), psnr(sh, photo.image), psnr(nt, photo.image)))
print(f"{'op':20} input  shipped shuffled notok")
allr = []
for name, rows in res.items():
    a = np.minimum(np.array(rows), 100).mean(0); allr += rows
    print(f"{name:20} " + " ".join(f"{v:7.2f}" for v in a))
a = np.minimum(np.array(allr), 100)
deg = np.array([r for n, rows in res.items() if n != "clean" for r in rows])
print(f"mean (degraded) {deg.mean(0).round(2)}; below input {int((deg[:, 1] < deg[:, 0]).sum())}/{len(deg)}"
      + ("  (--quick: shuffled and notok columns are the input)" if args.quick else ""))
fam = {}
for name, rows in res.items():
    if name != "clean":
        fam.setdefault(name.split("_")[0], []).extend(rows)
worst = min(fam, key=lambda f: np.mean([r[1] - r[0] for r in fam[f]]))
clean = np.array(res.get("clean", [[100, 100, 100, 100]]))
print(f"worst family vs input: {worst} {np.mean([r[1] - r[0] for r in fam[worst]]):+.2f} dB; "
      f"clean photos: min {np.min(clean[:, 1]):.2f} dB to the input")
