"""The face check on train photos: for every (photo, grid operator), the restorer's output blended with its input at
strengths 0, 0.1, ..., 1 and the face's projection statistics, then the rules compared (none = the whole correction,
a* = the face check of face2scene_core.face_check, ideal = the best strength known from the ground truth).

    python scripts/face_check_sweep.py ADAPTER|- OUT.json [--fadex DIR] [--photos 6] [--max-pixels 1000000] [--part train]
    python scripts/face_check_sweep.py --summarise OUT.json

Made to choose a model and the rule on TRAIN photos (`--part train`, the default); the held-out benchmark is
`face2scene eval-photos`.
"""
import argparse, json, sys
import numpy as np

A = np.linspace(0, 1, 11)


def sweep(args):
    from face2scene_core.degradation.families import benchmark_grid
    from face2scene_core.evaluation.metrics import psnr
    from face2scene_core.evaluation.photos import Columns, _apply, select_photos
    from face2scene_core.face_check import face_check
    from face2scene_core.pipeline import Face2ScenePipeline

    pipe = Face2ScenePipeline.from_paths(adapter=None if args.adapter == "-" else args.adapter, fadex=args.fadex,
                                         device="cpu")
    cols = Columns(pipe)
    rows = []
    for pi, photo in enumerate(select_photos(args.photos, args.part, max_pixels=args.max_pixels)):
        for op in benchmark_grid():
            lq = _apply(photo.image, op)
            tokens, _, _, pair = cols.tokens(lq, photo.refs, with_pair=True)
            if tokens is None:
                continue
            out = cols.restore(pipe.restorer, lq, tokens)
            v = face_check(lq, out, *pair)
            curve = [psnr(np.clip(lq + a * (out.astype(np.float32) - lq), 0, 255).round().astype(np.uint8),
                          photo.image) for a in A]
            rows.append({"photo": photo.path.name, "op": op.name, "curve": [min(c, 100.0) for c in curve],
                         "strength": v.strength, "agreement": v.agreement})
            print(pi, op.name, f"input {curve[0]:.2f} whole {curve[-1]:.2f} strength {v.strength:.2f}", flush=True)
    with open(args.out, "w") as f:
        json.dump({"adapter": args.adapter, "fadex": args.fadex or "embedded", "photos": args.photos, "part": args.part, "max_pixels": args.max_pixels,
                   "rows": rows}, f, indent=1)


def summarise(path):
    rows = json.load(open(path))["rows"]
    at = lambda r, a: float(np.interp(a, A, r["curve"]))  # noqa: E731
    rules = {"whole correction": lambda r: 1.0, "face check": lambda r: r["strength"],
             "ideal (needs the ground truth)": lambda r: float(A[int(np.argmax(r["curve"]))])}
    for name, rule in rules.items():
        gains = {}
        for r in rows:
            if r["op"] != "clean":
                gains.setdefault(r["op"], []).append(at(r, rule(r)) - r["curve"][0])
        allg = np.concatenate([np.array(g) for g in gains.values()])
        clean = [at(r, rule(r)) for r in rows if r["op"] == "clean"]
        worst = min(gains, key=lambda k: np.mean(gains[k]))
        print(f"{name:32} mean gain {allg.mean():+.3f} dB, below the input {int((allg < -0.005).sum())}/{len(allg)}, "
              f"worst operator {worst} {np.mean(gains[worst]):+.2f}, clean min {min(clean):.2f} dB")
        if name == "face check":
            for op, g in gains.items():
                print(f"    {op:18} {np.mean(g):+.2f} (whole {np.mean([at(r, 1) - r['curve'][0] for r in rows if r['op'] == op]):+.2f})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--summarise"]:
        summarise(sys.argv[2])
    else:
        ap = argparse.ArgumentParser()
        ap.add_argument("adapter"); ap.add_argument("out")
        ap.add_argument("--fadex", help="FaDeX weights folder the adapter was trained on (default: the embedded one)")
        ap.add_argument("--photos", type=int, default=6)
        ap.add_argument("--max-pixels", type=int, default=1_000_000)
        ap.add_argument("--part", default="train", choices=["train", "heldout"])
        args = ap.parse_args()
        sweep(args)
        summarise(args.out)
