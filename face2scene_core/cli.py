"""The ``face2scene`` command line.

    face2scene restore PHOTO_OR_FOLDER --refs DIR -o OUT      restore one photo or a whole folder
    face2scene code PHOTO_OR_FOLDER -o CODE.safetensors       save the degradation code (a shoot's: pooled)
    face2scene estimate PHOTO --refs DIR [--json]             blur, motion, noise, JPEG, scale read from the face
    face2scene degrade IN_DIR -o OUT --seed 0                 degraded copies + JSON of sampled parameters
    face2scene train-fadex --config CFG [--resume]            contrastive FaDeX training
    face2scene eval-fadex --weights DIR --images GLOB -o OUT  the paper's Fig. 3 analysis + preset retrieval
    face2scene train-restorer --config CFG [--resume]         stage-2 training (MapNet + LoRA + conv_in)
    face2scene bench                                          per-stage time and peak memory
    face2scene eval-photos -o OUT                             the native-scale photo benchmark (held-out photos)

Every user-facing failure is a :class:`~face2scene_core.errors.Face2SceneError`: it is printed as one line
(``error: ...``) with exit code 2, never as a traceback. Folder runs go on past a failing image, report it,
and exit 1 if any image failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from .errors import ConfigError, Face2SceneError

log = logging.getLogger("face2scene")


def _add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore a photo (or every image of a folder) using the face as an oracle")
    p.add_argument("input", help="a photo, or a folder of photos (gallery mode)")
    p.add_argument("--refs", action="append", metavar="[NAME=]DIR",
                   help="folder (or one image) of clean reference photos of the person; repeat as NAME=DIR for "
                   "several people (each photo is restored with the person whose face matches best; if none "
                   "reaches the same-person threshold, the best match is used and the report says so). "
                   "Without it the face is chosen by size and restored without references")
    p.add_argument("-o", "--output", required=True,
                   help="output file (single photo) or folder; existing files are never overwritten, and the "
                   "same command run again resumes (skips finished photos)")
    p.add_argument("--format", choices=["same", "png", "jpg", "webp", "tiff"], default="same",
                   help="output format (default: each photo's own, with its EXIF, ICC profile, alpha and depth)")
    p.add_argument("--no-recursive", action="store_true",
                   help="only the photos directly in the folder (default: subfolders too, structure kept)")
    p.add_argument("--sd-turbo", help="SD-Turbo single-file .safetensors or diffusers folder "
                   "(omit to use the embedded CPU model shipped with the package)")
    p.add_argument("--adapter", help="Face2Scene adapter .safetensors (MapNet + LoRA + conv_in) for --sd-turbo")
    p.add_argument("--fadex", help="FaDeX weights folder (default: the embedded one)")
    p.add_argument("--face", default="reference", help="which face drives the restoration: "
                   "'reference' (best match to --refs), 'largest', 'all' (every usable face, their codes pooled by "
                   "size x detection score), or a face index (0 = largest)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's, 1.07 for SD-Turbo)")
    p.add_argument("--tile", type=int, default=None,
                   help="largest tile side in pixels (default: photos above 4 MP are cut into as few tiles of at most "
                   "1280 px as they need, fitted to the photo and rounded to the model's multiple, so memory is "
                   "bounded by a tile)")
    p.add_argument("--tile-overlap", type=int, default=None, help="tile overlap in pixels (default: tile / 8, at most 128)")
    p.add_argument("--color-fix", choices=["none", "wavelet", "adain"], default="none")
    p.add_argument("--paste-face", action="store_true", help="paste the Ref-FR face back into the result")
    p.add_argument("--no-face-check", action="store_true",
                   help="apply the restorer's whole correction; by default it is scaled down as far as the photo's "
                   "face disagrees with it (the Ref-FR face as the oracle: do no harm)")
    p.add_argument("--no-face-ok", action="store_true",
                   help="restore photos without a usable face without degradation tokens instead of failing")
    p.add_argument("--code", metavar="FILE", help="a degradation code (.safetensors, from `face2scene code` or "
                   "--shoot-code): photos without a usable face are restored with it instead of failing "
                   "(see --code-use)")
    p.add_argument("--code-use", choices=["fallback", "always"], default="fallback",
                   help="fallback (default): the code only where a photo has no usable face; always: every photo "
                   "with the code instead of its own face")
    p.add_argument("--shoot-code", action="store_true",
                   help="folder runs: first pool the evidence of every usable face of every photo into one code "
                   "(saved as face2scene_shoot_code.safetensors in the output folder), then restore every photo "
                   "with it: for a shoot whose photos share one degradation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--workers", type=int, default=1, choices=[0, 1],
                   help="1 (default): read the next photo and write the previous one in background threads while "
                   "the model runs; 0: one step after the other")
    p.add_argument("--report", help="the JSON-lines report (default: face2scene_report.jsonl in the output "
                   "folder, or <output name>.report.jsonl beside a single output)")
    p.set_defaults(func=_cmd_restore)


def _add_code(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("code", help="save the degradation code read from a photo's face (or pooled over a folder)")
    p.add_argument("input", help="a photo, or a folder of photos of one shoot (every usable face is pooled)")
    p.add_argument("-o", "--output", required=True, help="the code file to write (.safetensors)")
    p.add_argument("--refs", help="folder (or one image) of clean reference photos of the person")
    p.add_argument("--face", default="all", help="'all' (default: every usable face, pooled by size x detection "
                   "score), 'reference', 'largest' or a face index")
    p.add_argument("--fadex", help="FaDeX weights folder (default: the embedded one)")
    p.add_argument("--sd-turbo", help="SD-Turbo checkpoint (the code belongs to the restorer that will use it)")
    p.add_argument("--adapter", help="Face2Scene adapter .safetensors for --sd-turbo")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-recursive", action="store_true", help="only the photos directly in the folder")
    p.set_defaults(func=_cmd_code)


def _add_estimate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", help="print what happened to a photo: blur, motion, noise, JPEG, scale, from its face")
    p.add_argument("input", help="a photo")
    p.add_argument("--refs", help="folder (or one image) of clean reference photos of the person")
    p.add_argument("--face", default="reference", help="'reference' (best match to --refs), 'largest', 'all' "
                   "(one estimate per usable face) or a face index")
    p.add_argument("--json", action="store_true", help="print JSON (values and uncertainties) instead of text")
    p.add_argument("--fadex", help="FaDeX weights folder (default: the embedded one)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_estimate)


def _add_degrade(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("degrade", help="write degraded copies (Real-ESRGAN second order) + a JSON of the parameters")
    p.add_argument("input", help="an image or a folder of images")
    p.add_argument("-o", "--output", required=True, help="output folder (created; nothing is overwritten)")
    p.add_argument("--seed", type=int, default=0, help="seed of the operator sampler (same seed, same bytes)")
    p.add_argument("--preset", choices=["D1", "D2", "D3", "D4"], help="use a fixed preset instead of sampling")
    p.add_argument("--copies", type=int, default=1, help="degraded copies per image (different operators)")
    p.add_argument("--spatially-varying", action="store_true",
                   help="spatially varying first blur (milder at the centre, stronger at the corners)")
    p.set_defaults(func=_cmd_degrade)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-fadex", help="train FaDeX contrastively (MoCo, multi-positive InfoNCE)")
    p.add_argument("--config", help="YAML config (see configs/fadex_default.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output dir")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=2000 lr=1e-4")
    p.set_defaults(func=_cmd_train_fadex)

    p = sub.add_parser("eval-fadex", help="the paper's Fig. 3 analysis and degradation-preset retrieval")
    p.add_argument("--weights", required=True, help="FaDeX weights folder (save_pretrained layout)")
    p.add_argument("--images", nargs="+", required=True, help="clean face images or folders (held out)")
    p.add_argument("-o", "--output", required=True, help="output folder for JSON + PNG")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_eval_fadex)

    p = sub.add_parser("train-restorer", help="stage-2 training: MapNet + LoRA + conv_in (or the small UNet)")
    p.add_argument("--config", help="YAML config (see configs/restorer_*.yaml)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.set_defaults(func=_cmd_train_restorer)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="per-stage time and peak memory at 512x512 and 2048x2048")
    p.add_argument("--sizes", default="512,2048", help="comma-separated square sizes")
    p.add_argument("--sd21", action="store_true",
                   help="also time the real SD 2.1-size UNet + VAE architecture (random weights; slow, ~6 GB)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--models", default="",
                   help="comma-separated: embedded (the shipped CPU model), tiny (an SD-2.1-shaped tiny model: the "
                        "SD-Turbo code path), sd21; default: embedded,tiny (+ sd21 with --sd21)")
    p.add_argument("--json", help="also write the figures as JSON here")
    p.set_defaults(func=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="face2scene", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_restore(sub)
    _add_code(sub)
    _add_estimate(sub)
    _add_degrade(sub)
    _add_train(sub)
    _add_bench(sub)
    _add_eval_photos(sub)
    return parser


def _add_eval_photos(sub: argparse._SubParsersAction) -> None:
    from .evaluation.cli import add_parser

    add_parser(sub)


# --------------------------------------------------------------------------------------------- commands
def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _print_item(rec: dict, i: int, n: int, eta: float | None) -> None:
    """One line per photo as it finishes (failures once, on stderr), with the time left."""
    where = f"[{i:>{len(str(n))}}/{n}]"
    left = f", about {_fmt_seconds(eta)} left" if eta and i < n else ""
    if rec.get("skipped"):
        print(f"{where} done before  {rec['input']} -> {rec['output']}", flush=True)
    elif rec["ok"]:
        warn = rec.get("report", {}).get("warning")
        print(f"{where} restored {rec['input']} -> {rec['output']} ({rec['seconds']:.1f} s{left})"
              + (f"; warning: {warn}" if warn else ""), flush=True)
    else:
        print(f"{where} FAILED   {rec['input']}: {rec['error']}", file=sys.stderr, flush=True)


def _cmd_restore(args: argparse.Namespace) -> int:
    from .batch import Journal, plan_run, run_plan
    from .large_photo import AUTO_TILE_ABOVE, AUTO_TILE_PX, estimate_peak_bytes

    kwargs = dict(face=args.face, cfg_scale=args.cfg, tile_size=args.tile, tile_overlap=args.tile_overlap,
                  color_fix=None if args.color_fix == "none" else args.color_fix, paste_face=args.paste_face,
                  no_face_ok=args.no_face_ok, face_check=not args.no_face_check)
    models = {"sd_turbo": args.sd_turbo, "adapter": args.adapter, "fadex": args.fadex}
    # 1. every path check before any model loads
    code, code_opts = None, {}
    if args.code and args.shoot_code:
        raise Face2SceneError("--code and --shoot-code both give the code: use one of them.")
    if args.shoot_code and not Path(args.input).is_dir():
        raise Face2SceneError("--shoot-code pools the faces of a folder of photos; the input is one photo (use "
                              "--code FILE with a code made by `face2scene code FOLDER`).")
    if args.code:
        from .codes import load_code

        code = load_code(args.code)  # readable and a code file; its model is checked once the models load
        code_opts = {"code": hashlib.sha256(Path(args.code).read_bytes()).hexdigest()[:16], "code_use": args.code_use}
    elif args.shoot_code:
        code_opts = {"code": "shoot", "code_use": "always"}
    plan = plan_run(Path(args.input), Path(args.output), refs=args.refs, fmt=args.format,
                    recursive=not args.no_recursive, report=args.report, options={**kwargs, **models, **code_opts})
    if len(plan.people) > 1 and str(args.face) != "reference":
        raise Face2SceneError(f"--face {args.face} with several --refs people: which person? Use --face reference "
                              "(the default), or one --refs.")
    if plan.largest and plan.largest[0] * plan.largest[1] > AUTO_TILE_ABOVE:
        w, h, name = plan.largest
        tile = args.tile or AUTO_TILE_PX
        print(f"largest photo {Path(name).name}: {w}x{h} ({w * h / 1e6:.0f} MP), tiles of about {tile} px; "
              f"estimated working memory {estimate_peak_bytes(h, w, tile) / 2**30:.1f} GB besides the models",
              flush=True)
    # 2. lock the output, then load the models (only if there is work left)
    with Journal(plan.journal) as journal:
        def build():
            from .codes import check_code, model_ids
            from .pipeline import Face2ScenePipeline

            pipe = Face2ScenePipeline.from_paths(**models, device=args.device)
            if code is not None:
                check_code(code.meta, model_ids(pipe), f"'{Path(args.code).name}'")
            return pipe

        if args.shoot_code:
            pipe = build()
            code = _shoot_code(pipe, plan)
            build = pipe  # noqa: F811  (run_plan takes a pipeline or a factory)
        if code is not None:
            kwargs.update(code=code, code_use="always" if args.shoot_code else args.code_use)
        summary = run_plan(build, plan, journal, on_item=_print_item, workers=args.workers, **kwargs)
    if summary["failed"]:
        print(f"{summary['failed']} of {summary['photos']} image(s) failed; see {summary['report']}", file=sys.stderr)
        return 1
    print(f"{summary['restored']} restored, {summary['skipped']} already done; report: {summary['report']}")
    if summary.get("estimates_plot"):
        print(f"estimated degradation per photo: {summary['estimates_plot']}")
    return 0


SHOOT_CODE_NAME = "face2scene_shoot_code.safetensors"


def _print_code_row(row: dict, prefix: str = "") -> None:
    what = f"{row['faces']} face(s)" if row["faces"] else f"no usable face ({row['skipped']})"
    print(f"{prefix}{Path(row['photo']).name}: {what}", flush=True)


def _shoot_code(pipe, plan):
    """The pooled code of a folder run (``--shoot-code``), reused from the output folder when a resumed run
    finds one made by the same model."""
    from .codes import load_code, model_ids, save_code, shoot_code
    from .errors import CodeFileError

    path = plan.out_root / SHOOT_CODE_NAME
    if path.is_file():
        try:
            code = load_code(path, expect=model_ids(pipe))
            print(f"shoot code: {path} (from an earlier run, {code.faces} face(s))", flush=True)
            return code
        except CodeFileError as exc:
            print(f"shoot code: {exc}; computing it again", flush=True)
    refs = plan.people[0].arrays if len(plan.people) == 1 else []
    n = len(plan.jobs)
    show = (lambda row: _print_code_row(row, "shoot code: ")) if n <= 50 else None
    code, rows = shoot_code(pipe, [j.src for j in plan.jobs], refs, on_photo=show)
    save_code(path, code)
    print(f"shoot code: {code.faces} face(s) from {code.meta['photos']} of {n} photo(s) -> {path}", flush=True)
    return code


def _cmd_code(args: argparse.Namespace) -> int:
    from .batch import parse_refs
    from .codes import save_code, shoot_code
    from .imageio import list_images
    from .pipeline import Face2ScenePipeline

    src, out = Path(args.input), Path(args.output)
    if out.suffix != ".safetensors":
        raise Face2SceneError(f"the code file must end in .safetensors, got '{out.name}'")
    if not src.exists():
        raise Face2SceneError(f"input not found: '{src}'")
    files = list_images(src, recursive=not args.no_recursive) if src.is_dir() else [src]
    if not files:
        raise Face2SceneError(f"no images in folder '{src}'")
    people = parse_refs(args.refs)
    refs = people[0].arrays if people else []
    face = int(args.face) if str(args.face).lstrip("-").isdigit() else args.face
    pipe = Face2ScenePipeline.from_paths(sd_turbo=args.sd_turbo, adapter=args.adapter, fadex=args.fadex,
                                         device=args.device)

    code, rows = shoot_code(pipe, files, refs, face=face, on_photo=_print_code_row)
    save_code(out, code)
    print(f"code of {code.faces} face(s) from {code.meta['photos']} of {len(files)} photo(s) -> {out}")
    return 0


def _cmd_estimate(args: argparse.Namespace) -> int:
    from .batch import parse_refs
    from .errors import WeightsNotFoundError
    from .fadex.estimate import describe
    from .imageio import load_photo
    from .pipeline import Face2ScenePipeline

    src = Path(args.input)
    if not src.is_file():
        raise Face2SceneError(f"photo not found: '{src}'")
    people = parse_refs(args.refs)
    photo = load_photo(src).rgb
    pipe = Face2ScenePipeline.from_paths(fadex=args.fadex, device=args.device)
    if pipe.estimator is None:
        raise WeightsNotFoundError("no degradation estimate head for this FaDeX (the embedded one ships in "
                                   "face2scene_core/weights/estimate; a custom --fadex needs its own)")
    face = int(args.face) if str(args.face).lstrip("-").isdigit() else args.face
    code = pipe.code(photo, people[0].arrays if people else [], face=face, source=src.name)
    rows = [{"face": {k: s[k] for k in ("bbox", "score", "side_px")}, "estimate": s.get("estimate")}
            for s in code.meta["sources"]]
    if args.json:
        print(json.dumps({"photo": str(src), "faces": rows}, indent=1))
    else:
        for r in rows:
            print(f"{src.name} face at {[round(v) for v in r['face']['bbox']]} ({r['face']['side_px']:.0f} px): "
                  f"{describe(r['estimate'])}")
    return 0


def _cmd_degrade(args: argparse.Namespace) -> int:
    from .gallery import degrade_paths

    written = degrade_paths(Path(args.input), Path(args.output), seed=args.seed, preset=args.preset,
                            copies=args.copies, spatially_varying=args.spatially_varying)
    print(f"wrote {len(written)} degraded image(s) and their parameters to {args.output}")
    return 0


def _cmd_train_fadex(args: argparse.Namespace) -> int:
    from .config import load_config
    from .fadex.train import FaDeXTrainConfig, train_fadex

    cfg = load_config(FaDeXTrainConfig, args.config, args.overrides)
    out = train_fadex(cfg, resume=args.resume)
    print(f"FaDeX weights: {out}")
    return 0


def _cmd_eval_fadex(args: argparse.Namespace) -> int:
    import glob

    from .errors import InputImageError, WeightsNotFoundError
    from .evaluation.fadex import evaluate_fadex
    from .fadex.model import FaDeX
    from .imageio import IMAGE_SUFFIXES, list_images

    if not (Path(args.weights) / "config.json").is_file():
        raise WeightsNotFoundError(f"no FaDeX weights in '{args.weights}' (expected config.json + safetensors).")
    images: list[Path] = []
    for pattern in args.images:
        p = Path(pattern)
        images += list_images(p) if p.is_dir() else [
            Path(m) for m in sorted(glob.glob(pattern)) if Path(m).suffix.lower() in IMAGE_SUFFIXES]
    if len(images) < 2:
        raise InputImageError(f"eval-fadex needs at least 2 face images, found {len(images)} in {args.images}.")
    model = FaDeX.from_pretrained(args.weights, use_safetensors=True).eval()
    result = evaluate_fadex(model, images, args.output, seed=args.seed)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_train_restorer(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training.stage2 import Stage2Config, train_restorer

    cfg = load_config(Stage2Config, args.config, args.overrides)
    out = train_restorer(cfg, resume=args.resume)
    print(f"restorer adapter: {out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()] or None
    unknown = set(models or ()) - {"embedded", "tiny", "sd21"}
    if unknown:
        raise ConfigError(f"--models: unknown model(s) {sorted(unknown)}; choose from embedded, tiny, sd21")
    figures = run_bench(sizes=sizes, sd21=args.sd21, repeats=args.repeats, models=models)
    if args.json:
        from .imageio import write_bytes_atomic

        write_bytes_atomic(args.json, json.dumps(figures, indent=2).encode())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Called without ``argv`` (the ``face2scene`` console script, ``python -m face2scene_core.cli``) the process
    ends right here once stdout, stderr and logging are flushed (every file the command wrote is closed by
    then): tearing down torch, diffusers and peft at interpreter exit cost 1.7-2.2 s per call, measured.
    """
    if argv is None:
        code = main(sys.argv[1:])
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    try:
        code = args.func(args)
    except Face2SceneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    log.info("done in %.1f s", time.perf_counter() - t0)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
