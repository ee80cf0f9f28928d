"""``Face2ScenePipeline``: photo + references -> restored photo + report.

The steps follow the paper (and DESIGN.md's data flow):

1. detect faces (5 landmarks) in the photo;
2. detect and align the references, embed identities;
3. choose the face that drives the restoration (best reference match, largest, or an index);
4. align it to the canonical 512x512 template;
5. Ref-FR: (aligned LQ face, aligned references) -> aligned HQ face;
6. warp the HQ face back to the native-scale crop: the (LQ, HQ) pair in scene coordinates;
7. FaDeX: spatial degradation features of the pair;
8. MapNet (inside the restorer): 21 degradation tokens;
9. one-step restorer on the whole photo, conditioned on the tokens;
10. optional: paste the Ref-FR face back with a feathered mask.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .errors import FaceTooSmallError, InputImageError, NoFaceError, WeightsNotFoundError

log = logging.getLogger(__name__)

EMBEDDED_DIR = Path(__file__).resolve().parent / "weights"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if present, else MPS if present, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


@dataclass
class RestoreOutput:
    """What :class:`Face2ScenePipeline` returns.

    ``image``: restored photo, ``uint8 (H, W, 3)``, the input's size.
    ``hq_face``: the Ref-FR face (aligned, ``uint8 (512, 512, 3)``) or ``None`` when no face was used.
    ``report``: JSON-serialisable dict (faces found and used, identity scores, embedding, timings).
    """

    image: np.ndarray
    hq_face: np.ndarray | None
    report: dict[str, Any] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


class Face2ScenePipeline:
    """Restore a whole photo using the face as a degradation oracle.

    Args:
        fadex: a :class:`~face2scene_core.fadex.model.FaDeX` (frozen).
        restorer: a :class:`~face2scene_core.restorer.model.OneStepRestorer` (holds MapNet).
        reffr: a :class:`~face2scene_core.reffr.base.RefFR`; ``None`` uses the embedded offline one.
        detector: face detector (``detect(image) -> list[Face]``); ``None`` = RetinaFace ONNX (offline).
        embedder: identity embedder; ``None`` = dlib (offline), created on first use with references.
        device: torch device for FaDeX and the restorer.
        align_size: side of the canonical aligned face (512).
    """

    def __init__(self, *, fadex, restorer, reffr=None, detector=None, embedder=None,
                 device: str | torch.device = "cpu", align_size: int = 512) -> None:
        self.device = resolve_device(device)
        self.fadex = fadex.to(self.device).eval()
        self.restorer = restorer.to(self.device).eval()
        self._reffr = reffr
        self._detector = detector
        self._embedder = embedder
        self.align_size = align_size
        self._prepared: list[tuple[list, tuple]] = []  # (reference arrays, prepare_references result), per person
        self._detected: tuple[np.ndarray, list] | None = None  # (last photo, its faces)
        self._estimator: Any = None  # None: not looked for yet; False: none for this FaDeX

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_paths(cls, *, sd_turbo: str | None = None, adapter: str | None = None, fadex: str | None = None,
                   reffr=None, device: str = "auto") -> "Face2ScenePipeline":
        """Build from weight paths; with no ``sd_turbo`` the embedded CPU model shipped in the package is used."""
        from .fadex.model import FaDeX
        from .restorer.loading import load_sd_turbo_restorer, restorer_from_adapter

        fadex_dir = Path(fadex) if fadex else EMBEDDED_DIR / "fadex"
        if not (fadex_dir / "config.json").is_file():
            raise WeightsNotFoundError(
                f"FaDeX weights not found in '{fadex_dir}' (expected config.json + "
                "diffusion_pytorch_model.safetensors). Pass --fadex DIR or reinstall the package."
            )
        fadex_model = FaDeX.from_pretrained(str(fadex_dir), use_safetensors=True)
        if sd_turbo:
            if not adapter:
                raise WeightsNotFoundError(
                    "--sd-turbo needs a Face2Scene adapter (--adapter FILE.safetensors) trained for it "
                    "(MapNet + LoRA + conv_in); train one with `face2scene train-restorer`."
                )
            restorer = load_sd_turbo_restorer(sd_turbo, adapter)
        else:
            path = Path(adapter) if adapter else EMBEDDED_DIR / "restorer.safetensors"
            if not path.is_file():
                raise WeightsNotFoundError(f"restorer adapter not found: '{path}'.")
            restorer = restorer_from_adapter(str(path))
        return cls(fadex=fadex_model, restorer=restorer, reffr=reffr, device=device)

    @property
    def detector(self):
        if self._detector is None:
            from .faces.detect import get_detector

            self._detector = get_detector("retinaface")
        return self._detector

    @property
    def embedder(self):
        if self._embedder is None:
            from .faces.identity import get_embedder

            self._embedder = get_embedder("dlib")
        return self._embedder

    @property
    def reffr(self):
        if self._reffr is None:
            from .reffr import default_reffr

            self._reffr = default_reffr(self.align_size)
        return self._reffr

    @property
    def estimator(self):
        """The degradation estimate head shipped for this FaDeX (``weights/estimate``), or ``None``."""
        if self._estimator is None:
            from .fadex.estimate import Estimator

            self._estimator = Estimator.for_fadex(EMBEDDED_DIR / "estimate", self.fadex) or False
        return self._estimator or None

    # ------------------------------------------------------------------ steps
    def detect(self, photo: np.ndarray) -> list:
        """Faces of ``photo`` (largest first); the same array object asked again is not detected twice."""
        if self._detected is not None and self._detected[0] is photo:
            return self._detected[1]
        faces = self.detector.detect(photo)
        self._detected = (photo, faces)
        return faces

    def prepare_references(self, references: Sequence[np.ndarray], names: Sequence[str] | None = None) -> tuple:
        """Detect, align and embed ``references`` once: ``(aligned faces, embeddings)``.

        A gallery passes the same reference arrays for every photo; up to 16 sets (people) are kept.
        ``names`` (e.g. file names) name a reference without a face in the error.
        """
        from .faces.select import prepare_references

        for arrays, result in self._prepared:
            if len(arrays) == len(references) and all(a is b for a, b in zip(arrays, references)):
                return result
        result = prepare_references(list(references), self.detector, self.embedder, size=self.align_size,
                                    names=None if names is None else list(names))
        self._prepared = (self._prepared + [(list(references), result)])[-16:]
        return result

    @staticmethod
    def check_inputs(photo: np.ndarray, references: Sequence[np.ndarray]) -> None:
        for name, img in [("photo", photo)] + [(f"reference {i}", r) for i, r in enumerate(references)]:
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise InputImageError(
                    f"{name} must be an RGB uint8 array (H, W, 3); got "
                    f"{getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}. Load it with imageio.load_image."
                )
        if min(photo.shape[:2]) < 32:
            raise InputImageError(f"photo is {photo.shape[1]}x{photo.shape[0]} px; at least 32x32 is needed.")

    def choose_face(self, photo: np.ndarray, references: Sequence[np.ndarray], face: str | int,
                    timer: _Timer, report: dict):
        from .faces.select import select_face

        with timer("detect"):
            faces = self.detect(photo)
        report["faces"] = [
            {"index": i, "bbox": [round(float(v), 1) for v in f.bbox], "score": round(float(f.score), 3)}
            for i, f in enumerate(faces)
        ]
        if not faces:
            raise NoFaceError(
                "no face found in the photo. Face2Scene reads the degradation from a face; use a photo with a "
                "visible face, or pass --no-face-ok to restore without degradation tokens."
            )
        ref_aligned, ref_emb = [], None
        mode, index = ("index", int(face)) if str(face).lstrip("-").isdigit() else (str(face), None)
        if references:
            with timer("references"):
                ref_aligned, ref_emb = self.prepare_references(references)
        if mode == "reference" and not references:
            mode = "largest"
        scores = None
        with timer("identity"):
            if mode == "reference":
                from .faces.select import rank_by_reference

                ranked = rank_by_reference(photo, faces, self.embedder, ref_emb)
                scores = {int(i): float(s) for i, s in ranked}
                idx, best = ranked[0]
                from .faces.identity import mismatch_message

                thr = getattr(self.embedder, "match_threshold", None)
                reason = f"best match to the {len(ref_aligned)} reference(s): similarity {best:.3f}"
                if thr is not None and best < thr:
                    reason += f"; {mismatch_message(self.embedder, best)}"
                    log.warning("face %d: %s", idx, reason)
            else:
                idx, reason = select_face(faces, mode=mode, index=index or 0)
        report["face_used"] = {"index": int(idx), "reason": reason,
                               "identity_scores": None if scores is None else
                               [round(scores[i], 4) for i in range(len(faces))]}
        return faces[idx], ref_aligned

    @torch.no_grad()
    def degradation_tokens(self, photo: np.ndarray, face, ref_aligned: list, timer: _Timer, report: dict,
                           hq_face: np.ndarray | None = None):
        """Stages I-II for one face: returns (tokens (1, 21, D), aligned HQ face, FaDeX embedding)."""
        from .faces.align import align_face, native_pair
        from .reffr.given import GivenFaceRefFR

        with timer("align"):
            aligned = align_face(photo, face, size=self.align_size)
        reffr = GivenFaceRefFR(hq_face) if hq_face is not None else self.reffr
        with timer("reffr"):
            hq = reffr.restore(aligned.image, [a.image for a in ref_aligned])
        report["reffr"] = getattr(reffr, "name", type(reffr).__name__)
        with timer("fadex"):
            lq_crop, hq_crop = native_pair(photo, aligned, hq)
            out = self.fadex.encode_pair(lq_crop, hq_crop)
        report["native_crop"] = list(lq_crop.shape[:2])
        if self.estimator is not None:
            report["estimate"] = self.estimator(out, float(lq_crop.shape[0]))
        with timer("mapnet"):
            tokens = self.restorer.tokens_from_features(out.features)
        return tokens, hq, aligned, out.embedding[0].float().cpu().numpy()

    def _face_code(self, photo: np.ndarray, face, ref_aligned: list, timer: _Timer, report: dict,
                   hq_face: np.ndarray | None, source: str | None):
        """One face's :class:`~face2scene_core.codes.DegradationCode` (+ its Ref-FR face and alignment)."""
        from .codes import DegradationCode, face_weight, model_ids
        from .faces.warp import affine_scale

        tokens, hq, aligned, emb = self.degradation_tokens(photo, face, ref_aligned, timer, report, hq_face)
        side = self.align_size / affine_scale(aligned.matrix)
        src = {"photo": source, "bbox": [round(float(v), 1) for v in face.bbox], "score": round(float(face.score), 3),
               "side_px": round(float(side), 1), "weight": round(face_weight(side, face.score), 1)}
        if "estimate" in report:
            src["estimate"] = report["estimate"]
        code = DegradationCode(tokens=tokens.detach().float().cpu(), embedding=emb, meta={**model_ids(self),
                                                                                          "sources": [src]})
        return code, hq, aligned

    def _all_faces_code(self, photo: np.ndarray, references: Sequence[np.ndarray], timer: _Timer, report: dict,
                        source: str | None):
        """Every usable face's code, pooled by face weight (largest face's Ref-FR face and alignment returned)."""
        from .codes import pool_codes

        self.choose_face(photo, references, "largest", timer, report)  # detection, references, the report
        ref_aligned = self.prepare_references(references)[0] if references else []
        codes, first, skipped = [], None, []
        for i, f in enumerate(self.detect(photo)):
            try:
                code, hq, aligned = self._face_code(photo, f, ref_aligned, timer, {}, None, source)
            except FaceTooSmallError as exc:
                skipped.append({"index": i, "reason": str(exc).split(".")[0]})
                continue
            code.meta["sources"][0]["index"] = i
            codes.append(code)
            first = first or (hq, aligned)
        if not codes:
            raise FaceTooSmallError(f"none of the {len(self.detect(photo))} faces is large enough to read the "
                                    "degradation from")
        pooled = pool_codes(codes)
        report["face_used"] = {"index": "all", "reason": f"{len(codes)} usable face(s) pooled by size x detection "
                               "score", "pooled": pooled.meta["sources"], "skipped": skipped}
        if len(codes) > 1:  # how much the faces disagree: cosine of each face's embedding to the pool's
            e = np.stack([c.embedding for c in codes])
            p = pooled.embedding / (np.linalg.norm(pooled.embedding) + 1e-8)
            cos = (e @ p) / (np.linalg.norm(e, axis=1) + 1e-8)
            report["face_used"]["agreement"] = [round(float(c), 4) for c in cos]
        return pooled, first[0], first[1]

    @torch.no_grad()
    def code(self, photo: np.ndarray, references: Sequence[np.ndarray] = (), *, face: str | int = "reference",
             hq_face: np.ndarray | None = None, source: str | None = None, report: dict | None = None):
        """Stages I-II as a reusable :class:`~face2scene_core.codes.DegradationCode`: the chosen face's tokens, or
        with ``face="all"`` every usable face's, pooled (weight: native side ** 2 x detection score). ``source``
        names the photo in the code's metadata. Raises NoFaceError / FaceTooSmallError like :meth:`__call__`."""
        self.check_inputs(photo, references)
        timer, report = _Timer(), {} if report is None else report
        try:
            if face == "all":
                return self._all_faces_code(photo, references, timer, report, source)[0]
            face_obj, ref_aligned = self.choose_face(photo, references, face, timer, report)
            return self._face_code(photo, face_obj, ref_aligned, timer, report, hq_face, source)[0]
        finally:
            self._detected = None

    def _code_tokens(self, code) -> torch.Tensor:
        from .codes import check_code, model_ids

        check_code(code.meta, model_ids(self))
        p = next(self.restorer.parameters())
        return code.tokens.to(device=p.device, dtype=p.dtype)

    @torch.no_grad()
    def __call__(self, photo: np.ndarray, references: Sequence[np.ndarray] = (), *, face: str | int = "reference",
                 hq_face: np.ndarray | None = None, cfg_scale: float | None = None, tile_size: int | None = None,
                 tile_overlap: int | None = None, color_fix: str | None = None, paste_face: bool = False,
                 no_face_ok: bool = False, pixels: np.ndarray | None = None, code=None,
                 code_use: str = "fallback", face_check: bool = True) -> RestoreOutput:
        """Restore ``photo`` (``uint8 (H, W, 3)``) given clean ``references`` of the same person.

        ``face``: ``"reference"`` (best match to the references), ``"largest"``, an index, or ``"all"`` (every
        usable face's code, pooled). ``hq_face``: an aligned face restored elsewhere (skips Ref-FR).
        ``no_face_ok``: when the photo has no usable face, restore without degradation tokens instead of raising.
        ``code``: a :class:`~face2scene_core.codes.DegradationCode` (e.g. a shoot's); ``code_use="fallback"`` uses
        it only when the photo has no usable face, ``"always"`` instead of the photo's own face.
        ``tile_size``: pixels; ``None`` tiles automatically above
        :data:`~face2scene_core.large_photo.AUTO_TILE_ABOVE` pixels, so memory is bounded by a tile
        (:func:`~face2scene_core.large_photo.restore_array`). ``pixels``: the same photo at 16 bits
        (``uint16 (H, W, 3)``); the restorer then works from it and ``image`` is ``uint16``.
        ``face_check``: scale the restorer's correction by how far the face agrees with it (the Ref-FR face as the
        oracle: :mod:`face2scene_core.face_check`); only where the photo's own face gave the code.
        """
        self.check_inputs(photo, references)
        if pixels is not None and (pixels.dtype != np.uint16 or pixels.shape != photo.shape):
            raise InputImageError(f"pixels must be uint16 {photo.shape}, got {pixels.dtype} {pixels.shape}")
        if code_use not in ("fallback", "always"):
            raise ValueError(f"code_use must be 'fallback' or 'always', got {code_use!r}")
        timer, report = _Timer(), {"size": [int(photo.shape[1]), int(photo.shape[0])]}
        tokens, hq, aligned = None, None, None
        code_tokens = None if code is None else self._code_tokens(code)
        try:
            if code_tokens is not None and code_use == "always":
                tokens = code_tokens
                report["code"] = {"used": "always", "faces": code.faces}
            elif face == "all":
                pooled, hq, aligned = self._all_faces_code(photo, references, timer, report, None)
                tokens = self._code_tokens(pooled)
                report["degradation_embedding"] = [round(float(v), 5) for v in pooled.embedding]
            else:
                face_obj, ref_aligned = self.choose_face(photo, references, face, timer, report)
                tokens, hq, aligned, emb = self.degradation_tokens(photo, face_obj, ref_aligned, timer, report,
                                                                   hq_face)
                report["degradation_embedding"] = [round(float(v), 5) for v in emb]
        except (NoFaceError, FaceTooSmallError) as exc:
            if code_tokens is not None:
                tokens = code_tokens
                report["code"] = {"used": "fallback", "faces": code.faces, "why": str(exc).split(". ")[0]}
                log.info("%s -- restoring with the given degradation code", str(exc).split(". ")[0])
            elif not no_face_ok:
                raise
            else:
                log.warning("%s -- restoring without degradation tokens", exc)
                report["fallback"] = f"no degradation tokens: {exc}"
        with timer("restore"):
            from .large_photo import auto_tile_size, restore_array

            source = photo if pixels is None else pixels
            if tile_size is None:
                tile_size = auto_tile_size(self.restorer, *source.shape[:2])
            if tile_size is not None:
                report["tile_px"] = int(tile_size)
            out = restore_array(self.restorer, source, tokens, cfg_scale=cfg_scale, tile_size=tile_size,
                                tile_overlap=tile_overlap, color_fix=color_fix, timings=timer.seconds)
        if face_check and hq is not None and aligned is not None and tokens is not None:
            from .face_check import apply_strength
            from .face_check import face_check as check

            with timer("face_check"):
                verdict = check(photo, out, aligned, hq)
                out = apply_strength(source, out, verdict.strength)
            report["face_check"] = verdict.as_report()
        elif face_check:
            report["face_check"] = ("not applied: restored without a degradation code" if tokens is None else
                                    "not applied: the code did not come from this photo's face")
        if paste_face and hq is not None:
            from .faces.align import paste_back

            with timer("paste"):
                if out.dtype == np.uint16:  # paste into the 8-bit view, keep 16 bits elsewhere
                    low = ((out.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
                    pasted = paste_back(low, hq, aligned)
                    changed = np.any(pasted != low, axis=2)
                    out[changed] = pasted[changed].astype(np.uint16) * 257
                else:
                    out = paste_back(out, hq, aligned)
            report["pasted_face"] = True
        report["timings_s"] = {k: round(v, 4) for k, v in timer.seconds.items()}
        self._detected = None  # do not hold on to this photo once it is restored
        return RestoreOutput(image=out, hq_face=hq, report=report)
