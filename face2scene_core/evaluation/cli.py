"""``face2scene eval-photos``: the argument parser (imports nothing heavy; the benchmark loads on use)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a whole number of cases >= 1, got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-photos", help="the native-scale photo benchmark (held-out photos x operator grid)")
    p.add_argument("-o", "--output", required=True, help="output folder (or, with --tune-classic, the JSON file)")
    p.add_argument("--photos", type=int, default=16, help="number of held-out photos (default 16)")
    p.add_argument("--part", choices=("heldout", "train"), default="heldout",
                   help="photos of the split's held-out identities (what is reported; default) or of its train "
                        "identities (for choosing a model without looking at the held-out figures)")
    p.add_argument("--max-pixels", type=int, default=1_000_000, help="photos are area-downscaled to this many pixels")
    p.add_argument("--adapter", help="restorer adapter to evaluate (default: the embedded one)")
    p.add_argument("--fadex", help="FaDeX weights folder (default: the embedded one)")
    p.add_argument("--ablation", help="a separately trained no-token restorer adapter (the 'ablation' column)")
    p.add_argument("--classic", default=str(Path(__file__).resolve().parents[2] / "configs" / "classic_baseline.json"), help="tuned classic-baseline JSON")
    p.add_argument("--ops", help="comma-separated operator names or families (default: the whole grid)")
    p.add_argument("--peer-cases", type=int, default=16, help="cases that also get the (slow) Real-ESRGAN columns")
    p.add_argument("--no-peer", action="store_true", help="skip the Real-ESRGAN columns")
    p.add_argument("--no-wrong-refs", action="store_true", help="skip the wrong-person-references column")
    p.add_argument("--tune-classic", action="store_true", help="tune the classic baseline on the train split instead")
    p.add_argument("--shard", help="K/N: run only photos K, K+N, ... (N processes side by side), then --merge")
    p.add_argument("--merge", action="store_true", help="merge the shards in OUTPUT into photos.json and print the table")
    p.add_argument("--partial", action="store_true", help="with --merge: summarise the shards present, naming them")
    p.add_argument("--add-ablation", metavar="ADAPTER", help="add the 'ablation' column with this no-token model to "
                   "the shards in OUTPUT (a run made without --ablation), then --merge")
    p.add_argument("--add-peer", type=_positive_int, metavar="N", help="add the Real-ESRGAN columns to N more cases of the "
                   "shards in OUTPUT (spread over families and photos), then --merge")
    p.add_argument("--fadex-only", action="store_true",
                   help="only the FaDeX analysis on the photos (Fig. 3 gap, retrieval across photos, GT and Ref-FR face)")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from .photos import (add_ablation, add_peer, fadex_on_photos, format_table, merge_shards, run_benchmark,
                         tune_classic_on_train)

    out = Path(args.output)
    if args.add_ablation:
        print(f"ablation column added to {add_ablation(out, args.add_ablation)} cases in {out}; now --merge")
        return 0
    if args.add_peer is not None:
        print(f"Real-ESRGAN columns added to {add_peer(out, args.add_peer)} cases in {out}; now --merge")
        return 0
    if args.tune_classic:
        res = tune_classic_on_train(out, n_photos=args.photos, max_pixels=args.max_pixels)
        print(f"classic baseline tuned on {res['n_cases']} train cases: {res['params']} -> {out}")
        return 0
    ops = [s.strip() for s in args.ops.split(",")] if args.ops else None
    if args.fadex_only:
        res = fadex_on_photos(out_dir=out, n_photos=args.photos, max_pixels=args.max_pixels, fadex=args.fadex, ops=ops,
                              part=args.part)
        for key in ("gt", "reffr", "reffr_norefs"):
            r = res[key]
            print(f"HQ={key}: gap {r['gap']:.3f}, top-1 across photos {r['top1_across_photos']:.1%} "
                  f"(chance {r['chance_across_photos']:.1%}), top-1 any {r['top1_accuracy']:.1%}")
        print(f"Ref-FR code -> GT codes of other photos: {res.get('cross_reffr_to_gt_top1', float('nan')):.1%}")
        return 0
    if args.merge:
        res = merge_shards(out, partial=args.partial)
        print(format_table(res))
        print(f"-> {out / 'photos.json'}")
        return 0
    shard = (0, 1)
    if args.shard:
        k, n = (int(v) for v in args.shard.split("/"))
        if not 0 <= k < n:
            raise ValueError(f"--shard K/N needs 0 <= K < N, got {args.shard}")
        shard = (k, n)
    res = run_benchmark(out_dir=out, n_photos=args.photos, max_pixels=args.max_pixels, adapter=args.adapter,
                        fadex=args.fadex, ablation=args.ablation, classic_file=Path(args.classic), ops=ops,
                        peer_cases=args.peer_cases, no_peer=args.no_peer, wrong_refs=not args.no_wrong_refs,
                        shard=shard, part=args.part)
    if shard[1] > 1:
        print(f"shard {shard[0]}/{shard[1]}: {res['n_cases']} cases -> {out}; merge with --merge when all are done")
        return 0
    print(format_table(res))
    print(f"-> {out / 'photos.json'}")
    return 0


__all__ = ["add_parser"]
