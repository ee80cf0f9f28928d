"""Stage-2 training samples: a degraded scene crop and a face pair made with THE SAME degradation operator.

For every sample one Real-ESRGAN operator ``D`` is drawn, then:

* the clean scene is rescaled by a random factor (the ground truth stays clean) and a square crop is taken;
  ``LQ scene = D(crop)``;
* if the scene has a usable face (detected once per image, boxes cached in a JSON file next to the run), the
  face pair is cut at native scale from the same degraded image: a region covering the crop and the face is
  degraded once with ``D``, the LQ scene crop and the LQ face crop are both cut from it, and the HQ face is the
  ground-truth crop ("non-reference" mode) or ``hq_fn(lq_face, gt_face)`` (e.g. a Ref-FR);
* otherwise a clean aligned face from the face pool is randomly cropped and resized to a native face size and
  degraded with the same ``D``.

Everything random comes from ``numpy.random.default_rng([seed, ...])`` keyed by the batch and sample index, so
a sample is a pure function of (config, seed, index): the iterator's whole state is the next batch index, which
the trainer stores in its checkpoints. Held-out images (``exclude`` patterns and the ``heldout`` list of
``split_file``) are removed before anything is drawn, so they are never yielded.
"""

from __future__ import annotations

import configparser
import fnmatch
import glob
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import cv2
import numpy as np
import torch

from ..errors import ConfigError, InputImageError
from ..imageio import IMAGE_SUFFIXES, load_image, to_float, to_uint8, write_bytes_atomic

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
HQFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Stage2DataConfig:
    """Where the training images come from and how samples are drawn.

    Relative paths are resolved against the current folder, then against the repository root; ``$VARS`` and
    ``~`` are expanded (e.g. ``${FACE2SCENE_DATASETS}/scenes_clean/**/*``).

    Args:
        scenes: globs (``**`` recursive) or files of clean scene photos.
        face_pool: globs or files of clean aligned faces, used when a scene has no usable face.
        exclude: globs or path suffixes never to train on (matched against the absolute path).
        split_file: JSON split (``tools/make_split.py`` format); its ``heldout`` list is excluded. ``null``: none.
        crop_sizes: scene crop sides in pixels; one is drawn per batch (all crops of a batch share it).
            Each must be a multiple of 16 (codec x4, UNet x4).
        scale_range: (lo, hi) factor the clean scene is resized by before cropping (never below the crop size).
        scene_face_prob: probability of using the scene's own face when it has a usable one (else the pool).
        face_score_threshold: detector confidence for a scene face.
        min_face: smallest native face crop side (px); FaDeX + MapNet need 32.
        max_face: larger face crops are centre-cropped to this side (FaDeX cost), never resized.
        pool_face_sizes: (lo, hi) native side a pool face is resized to.
        pool_face_jitter: the pool face is cropped to a random (1 - U(0, jitter)) fraction of its side first.
        region_margin: pixels of context around the crop and face when degrading the shared region.
        max_side: clean scenes with a longer side are downscaled to it once at load (area interpolation).
        degradation: overrides of the operator sampler's config (``DegradationConfig``, e.g. ``{scale: 4}``, or
            ``PhotoDegradationConfig``, e.g. ``{family_weights: {clean: 0.2, ...}}``); empty: its defaults.
        operators: ``realesrgan`` (Real-ESRGAN x4 second order) or ``photo`` (native-scale families, mild to heavy,
            with clean photos: :mod:`face2scene_core.degradation.families`).
        detector: face detector backend for the scenes (``retinaface``: offline, shipped).
        reffr_prob: share of samples whose HQ face (FaDeX's second input) is what the pipeline computes, the
            offline Ref-FR's output on the degraded face (resized to ``reffr_size``, restored without references,
            resized back), instead of the ground truth; ignored when the trainer is given an ``hq_fn``.
        reffr_refiner: RefineNet folder of that Ref-FR (``embedded``: the shipped one; ``""``: the transfer alone).
        reffr_size: face side the Ref-FR runs at.
    """

    scenes: list[str] = field(default_factory=lambda: ["../shared/datasets/scenes_clean/**/*"])
    face_pool: list[str] = field(default_factory=lambda: ["../shared/datasets/faces_ffhq/daps_test/**/*"])
    exclude: list[str] = field(default_factory=list)
    split_file: str | None = "configs/split.json"
    crop_sizes: list[int] = field(default_factory=lambda: [128, 160, 192, 224, 256])
    scale_range: tuple[float, float] = (0.5, 1.0)
    scene_face_prob: float = 1.0
    face_score_threshold: float = 0.8
    min_face: int = 32
    max_face: int = 256
    pool_face_sizes: tuple[int, int] = (48, 160)
    pool_face_jitter: float = 0.15
    region_margin: int = 24
    max_side: int = 1024
    degradation: dict[str, Any] = field(default_factory=dict)
    operators: str = "realesrgan"
    detector: str = "retinaface"
    reffr_prob: float = 0.0
    reffr_refiner: str = "embedded"
    reffr_size: int = 256

    def __post_init__(self) -> None:
        if not self.crop_sizes or any(s < 32 or s % 16 for s in self.crop_sizes):
            raise ConfigError(f"data.crop_sizes must be multiples of 16 and >= 32, got {self.crop_sizes}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ConfigError(f"data.scale_range must satisfy 0 < lo <= hi, got {self.scale_range}")
        if not 0.0 <= self.scene_face_prob <= 1.0:
            raise ConfigError(f"data.scene_face_prob must be in [0, 1], got {self.scene_face_prob}")
        if self.min_face < 32 or self.max_face < self.min_face:
            raise ConfigError(f"data.min_face must be >= 32 and <= max_face, got {self.min_face}, {self.max_face}")
        plo, phi = self.pool_face_sizes
        if not self.min_face <= plo <= phi:
            raise ConfigError(f"data.pool_face_sizes must satisfy min_face <= lo <= hi, got {self.pool_face_sizes}")
        if not 0.0 <= self.pool_face_jitter < 1.0:
            raise ConfigError(f"data.pool_face_jitter must be in [0, 1), got {self.pool_face_jitter}")
        if self.max_side < max(self.crop_sizes):
            raise ConfigError(f"data.max_side must be >= the largest crop size, got {self.max_side}")
        if self.region_margin < 0:
            raise ConfigError(f"data.region_margin must be >= 0, got {self.region_margin}")
        if not 0.0 <= self.reffr_prob <= 1.0:
            raise ConfigError(f"data.reffr_prob must be in [0, 1], got {self.reffr_prob}")
        if self.reffr_size < 64 or self.reffr_size % 4:
            raise ConfigError(f"data.reffr_size must be a multiple of 4 and >= 64, got {self.reffr_size}")


@dataclass
class Stage2Sample:
    """One training sample (numpy, HWC).

    Attributes:
        hq: ``float32 (S, S, 3)`` clean scene crop in ``[0, 1]``.
        lq: ``float32 (S, S, 3)`` the same crop degraded by ``params`` (8-bit quantised), ``[0, 1]``.
        face_lq: ``float32 (h, w, 3)`` degraded face crop at native scale, made with the same ``params``.
        face_hq: ``float32 (h, w, 3)`` its ground truth (or ``hq_fn`` output), same shape.
        params: the one ``DegradationParams`` used for both.
        face_source: ``"scene"`` (the scene's own face) or ``"pool"``.
        scene_path, face_path: source files.
        scale: factor the clean scene was resized by.
        crop_box, region_box, face_box: ``(x0, y0, x1, y1)`` in the resized scene; ``region_box`` is what was
            degraded as one image (scene faces only; for pool faces it equals ``crop_box``), ``face_box`` is
            ``None`` for pool faces.
    """

    hq: np.ndarray
    lq: np.ndarray
    face_lq: np.ndarray
    face_hq: np.ndarray
    params: Any
    face_source: Literal["scene", "pool"]
    scene_path: str
    face_path: str
    scale: float
    crop_box: tuple[int, int, int, int]
    region_box: tuple[int, int, int, int]
    face_box: tuple[int, int, int, int] | None


@dataclass
class Stage2Batch:
    """A batch: scene tensors ``(B, 3, S, S)`` float32 in ``[0, 1]`` and one face pair per sample.

    ``face_lq[i]`` / ``face_hq[i]`` are ``(1, 3, h_i, w_i)`` (faces differ in native size, so they are not stacked).
    """

    index: int
    lq: torch.Tensor
    hq: torch.Tensor
    face_lq: list[torch.Tensor]
    face_hq: list[torch.Tensor]
    samples: list[Stage2Sample]

    def to(self, device: torch.device | str) -> "Stage2Batch":
        return Stage2Batch(self.index, self.lq.to(device), self.hq.to(device), [f.to(device) for f in self.face_lq],
                           [f.to(device) for f in self.face_hq], self.samples)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)  # 3, h, w


DATASETS_ALIAS = "../shared/datasets"  # how configs and manifests name the shared photos (relative to the checkout)


def default_datasets_dir() -> Path:
    """``shared/datasets`` beside the repository, else ``$FACE2SCENE_DATASETS``, else ``shared/datasets`` beside the
    local repository this one was cloned from (a fresh ``git clone`` into a temporary folder, as CI makes)."""
    here = REPO_ROOT.parent / "shared" / "datasets"
    if here.is_dir():
        return here
    env = os.environ.get("FACE2SCENE_DATASETS")
    if env:
        return Path(env)
    origin = _local_origin()
    if origin is not None and (origin.parent / "shared" / "datasets").is_dir():
        return origin.parent / "shared" / "datasets"
    return here


def _local_origin() -> Path | None:
    """The folder of the ``origin`` remote when it is a path on this machine (read from ``.git/config``)."""
    cfg = configparser.ConfigParser(strict=False)
    try:
        cfg.read(REPO_ROOT / ".git" / "config")
        url = cfg.get('remote "origin"', "url", fallback="")
    except (configparser.Error, OSError):
        return None
    url = url.removeprefix("file://")
    path = Path(url) if url.startswith("/") else None
    return path.resolve() if path is not None and path.is_dir() else None


def resolve_path(text: str) -> Path:
    """Expand ``$VARS``/``~``; a relative path is taken from the current folder if it exists there, else the repo;
    one under ``../shared/datasets`` falls back to :func:`default_datasets_dir` (a clone away from ``shared/``)."""
    p = Path(os.path.expanduser(os.path.expandvars(text)))
    if p.is_absolute() or p.exists():
        return p.resolve() if p.exists() else p
    cand = REPO_ROOT / p
    if not cand.exists():  # the datasets folder is looked up only when the path is not found as written
        cand = _datasets_rerooted(p.as_posix())
    return cand.resolve() if cand is not None and cand.exists() else p


def _datasets_rerooted(text: str) -> Path | None:
    """``../shared/datasets/<rest>`` as ``default_datasets_dir() / <rest>``; None for any other path."""
    text = text.replace("\\", "/")
    if text != DATASETS_ALIAS and not text.startswith(DATASETS_ALIAS + "/"):
        return None
    return default_datasets_dir() / text[len(DATASETS_ALIAS):].lstrip("/")


def expand_images(patterns: Sequence[str]) -> list[Path]:
    """Image files matched by ``patterns`` (files, folders or recursive globs), sorted and de-duplicated."""
    found: set[Path] = set()
    for pat in patterns:
        text = os.path.expanduser(os.path.expandvars(pat))
        bases = [Path(text)] if Path(text).is_absolute() else [Path.cwd() / text, REPO_ROOT / text]
        if (rerooted := _datasets_rerooted(text)) is not None:
            bases.append(rerooted)
        for base in bases:
            hits = [Path(h) for h in glob.glob(str(base), recursive=True)]
            if len(hits) == 1 and hits[0].is_dir():
                hits = [f for f in hits[0].rglob("*")]
            hits = [h.resolve() for h in hits if h.is_file() and h.suffix.lower() in IMAGE_SUFFIXES]
            if hits:
                found.update(hits)
                break
    return sorted(found)


def load_heldout(split_file: str | None) -> list[str]:
    """The held-out entries of a split JSON (``{"heldout": [...]}``, or ``held_out``/``test``/``exclude``, or a list)."""
    if split_file is None:
        return []
    p = resolve_path(split_file)
    if not p.is_file():
        raise ConfigError(f"split file not found: '{split_file}' (resolved to '{p}'). Fix `data.split_file` or set it to null.")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"split file '{p}' is not valid JSON: {exc}") from exc
    if isinstance(data, list):
        return [str(x) for x in data]
    for key in ("heldout", "held_out", "test", "exclude"):
        if key in data:
            return [str(x) for x in data[key]]
    raise ConfigError(f"split file '{p}' has no 'heldout' list (keys: {sorted(data)}).")


def is_excluded(path: Path, patterns: Sequence[str]) -> bool:
    """True if ``path`` matches a glob, equals a path, or ends with a relative path of ``patterns``."""
    posix = path.as_posix()
    for pat in patterns:
        text = os.path.expanduser(os.path.expandvars(pat)).replace("\\", "/")
        if any(ch in text for ch in "*?["):
            if fnmatch.fnmatch(posix, text) or fnmatch.fnmatch(posix, "*/" + text.lstrip("./")):
                return True
        elif posix == text or posix.endswith("/" + text.lstrip("./")):
            return True
    return False


class FaceBoxCache:
    """Faces of each scene, detected once and kept in a JSON file (``{abs_path: {"shape": [h, w], "faces": [...]}}``)."""

    def __init__(self, path: Path | None, detector_factory: Callable[[], Any]) -> None:
        self.path = path
        self._factory = detector_factory
        self._detector = None
        self.entries: dict[str, dict] = {}
        if path is not None and path.is_file():
            try:
                self.entries = json.loads(path.read_text())
            except json.JSONDecodeError:
                log.warning("face box cache '%s' is unreadable; detecting again", path)

    def faces(self, path: Path, image: np.ndarray) -> list:
        from ..faces.types import Face

        key = str(path)
        entry = self.entries.get(key)
        if entry is None or list(entry.get("shape", [])) != list(image.shape[:2]):
            if self._detector is None:
                self._detector = self._factory()
            found = self._detector.detect(image)
            entry = {"shape": list(image.shape[:2]), "faces": [f.to_dict() for f in found]}
            self.entries[key] = entry
            if self.path is not None:
                write_bytes_atomic(self.path, json.dumps(self.entries, indent=1).encode())
        return [Face.from_dict(f) for f in entry["faces"]]


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


class Stage2Data:
    """Deterministic, resumable iterator of :class:`Stage2Batch` (see the module docstring).

    Args:
        cfg: :class:`Stage2DataConfig`.
        batch_size: samples per batch (>= 1).
        seed: everything random derives from it.
        cache_dir: folder for ``face_boxes.json`` (the run's output folder); ``None`` keeps boxes in memory.
        detector: object with ``detect(uint8 image) -> list[Face]``; default ``get_detector(cfg.detector)``.
        degradation: object with ``sample(rng)`` / ``apply(float_img, params)``; default Real-ESRGAN from config.
        hq_fn: optional ``hq_fn(lq_face_uint8, gt_face_uint8) -> hq_face_uint8`` (same shape), e.g. a Ref-FR.
        overfit_batches: ``n > 0`` repeats the first ``n`` batches forever (debugging / tests).
    """

    def __init__(self, cfg: Stage2DataConfig, *, batch_size: int, seed: int = 0, cache_dir: str | Path | None = None,
                 detector: Any = None, degradation: Any = None, hq_fn: HQFn | None = None,
                 overfit_batches: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if overfit_batches < 0:
            raise ValueError(f"overfit_batches must be >= 0, got {overfit_batches}")
        self.cfg = cfg
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.overfit_batches = int(overfit_batches)
        self.hq_fn = hq_fn
        self._reffr = None
        held = list(cfg.exclude) + load_heldout(cfg.split_file)
        scenes = expand_images(cfg.scenes)
        pool = expand_images(cfg.face_pool)
        self.scene_paths = [p for p in scenes if not is_excluded(p, held)]
        self.pool_paths = [p for p in pool if not is_excluded(p, held)]
        log.info("stage-2 data: %d scene images (%d held out), %d pool faces (%d held out)", len(self.scene_paths),
                 len(scenes) - len(self.scene_paths), len(self.pool_paths), len(pool) - len(self.pool_paths))
        if not self.scene_paths:
            raise ConfigError(f"no training scene images: data.scenes={cfg.scenes} matched {len(scenes)} file(s), "
                              f"all held out or none found (current folder '{Path.cwd()}').")
        if not self.pool_paths:
            raise ConfigError(f"no face-pool images: data.face_pool={cfg.face_pool} matched {len(pool)} file(s) "
                              "after removing held-out ones; the pool is needed for scenes without a face.")
        if degradation is None:
            from ..degradation.families import build_degradation

            degradation = build_degradation(cfg.operators, cfg.degradation)
        self.degradation = degradation
        if detector is None:
            def factory():
                from ..faces.detect import get_detector

                return get_detector(cfg.detector, score_threshold=cfg.face_score_threshold)
        else:
            def factory():
                return detector
        cache = Path(cache_dir) / "face_boxes.json" if cache_dir is not None else None
        self.face_cache = FaceBoxCache(cache, factory)
        self._images: dict[Path, np.ndarray] = {}
        self.batch_index = 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """JSON-serialisable iterator state: the next batch index (samples are pure functions of it)."""
        return {"batch_index": self.batch_index, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state.get("seed", self.seed)) != self.seed or int(state.get("batch_size", self.batch_size)) != self.batch_size:
            raise ConfigError(f"data state was saved with seed={state.get('seed')} batch_size={state.get('batch_size')}; "
                              f"this run has seed={self.seed} batch_size={self.batch_size}. Resume with the same values.")
        self.batch_index = int(state["batch_index"])

    def __iter__(self) -> "Stage2Data":
        return self

    def __next__(self) -> Stage2Batch:
        batch = self.batch(self.batch_index)
        self.batch_index += 1
        return batch

    # ------------------------------------------------------------------ sampling
    def _image(self, path: Path, *, limit: bool = True) -> np.ndarray:
        """A clean image (cached); scenes longer than ``max_side`` are downscaled once."""
        img = self._images.get(path)
        if img is None:
            img = load_image(path)
            if limit and max(img.shape[:2]) > self.cfg.max_side:
                img = _resize(img, self.cfg.max_side / max(img.shape[:2]))
            self._images[path] = img
        return img

    def scene_for(self, k: int) -> Path:
        """The scene of global sample ``k``: a fresh seeded permutation of the scenes per epoch."""
        n = len(self.scene_paths)
        perm = np.random.default_rng([self.seed, 0, k // n]).permutation(n)
        return self.scene_paths[int(perm[k % n])]

    def batch(self, b: int) -> Stage2Batch:
        """Batch number ``b`` (a pure function of config, seed and ``b``)."""
        if b < 0:
            raise ValueError(f"batch index must be >= 0, got {b}")
        if self.overfit_batches:
            b = b % self.overfit_batches
        rng = np.random.default_rng([self.seed, 1, b])
        size = int(rng.choice(self.cfg.crop_sizes))
        samples = [self.sample(b * self.batch_size + j, size) for j in range(self.batch_size)]
        return Stage2Batch(
            index=b,
            lq=torch.stack([_to_tensor(s.lq) for s in samples]),
            hq=torch.stack([_to_tensor(s.hq) for s in samples]),
            face_lq=[_to_tensor(s.face_lq)[None] for s in samples],
            face_hq=[_to_tensor(s.face_hq)[None] for s in samples],
            samples=samples,
        )

    def degrade(self, img_uint8: np.ndarray, params: Any) -> np.ndarray:
        """``params`` applied to a uint8 image; returns float32 in [0, 1], quantised to 8 bits like a real photo."""
        out = self.degradation.apply(to_float(img_uint8), params)
        if out.shape != img_uint8.shape:
            raise ValueError(f"the degradation changed the size {img_uint8.shape} -> {out.shape}; it must keep it")
        return to_float(to_uint8(out))

    def _reffr_hq(self, lq8: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """The offline Ref-FR's output for a native face crop, as the pipeline computes it (no references here)."""
        if self._reffr is None:
            from ..reffr import reffr_from_name
            from ..reffr.transfer import ReferenceTransferRefFR

            self._reffr = reffr_from_name(self.cfg.reffr_refiner, self.cfg.reffr_size)
            logging.getLogger(ReferenceTransferRefFR.__module__).setLevel(logging.WARNING)  # no-reference notes
        size = self.cfg.reffr_size
        h, w = lq8.shape[:2]
        up = cv2.resize(lq8, (size, size), interpolation=cv2.INTER_CUBIC)
        out = np.asarray(self._reffr.restore(up, []))
        return cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)

    def _hq(self, lq: np.ndarray, gt: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.hq_fn is None:
            if self.cfg.reffr_prob > 0 and rng is not None and rng.random() < self.cfg.reffr_prob:
                return to_float(self._reffr_hq(to_uint8(lq), gt))
            return to_float(gt)
        lq8 = to_uint8(lq)
        hq = np.asarray(self.hq_fn(lq8, gt))
        if hq.shape != gt.shape or hq.dtype != np.uint8:
            raise ValueError(f"hq_fn must return uint8 {gt.shape}, got {hq.dtype} {hq.shape}")
        return to_float(hq)

    def _scene_face(self, path: Path, scene: np.ndarray, scale: float, rng: np.random.Generator):
        """A usable face box ``(x0, y0, x1, y1)`` in the resized scene, or None."""
        if self.cfg.scene_face_prob <= 0:  # pool faces only: no detection at all
            return None
        faces = self.face_cache.faces(path, self._image(path))
        if not faces or rng.random() >= self.cfg.scene_face_prob:
            return None
        from ..faces.align import align_face, native_crop_box
        from ..faces.types import Face

        boxes = []
        for f in faces:
            f = Face(bbox=f.bbox * scale, landmarks=f.landmarks * scale, score=f.score)
            # the aligned image itself is not used; a small size keeps the warp cheap
            # a square box inside the photo; the small aligned image itself is not used
            x0, y0, x1, y1 = native_crop_box(align_face(scene, f, size=64, min_face_size=0), scene.shape)
            side = x1 - x0
            if side >= self.cfg.min_face:
                if side > self.cfg.max_face:  # centre-crop, never resize (resizing changes the degradation)
                    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
                    side = self.cfg.max_face
                    x0, y0 = cx - side // 2, cy - side // 2
                    x1, y1 = x0 + side, y0 + side
                boxes.append((x0, y0, x1, y1))
        if not boxes:
            return None
        return boxes[int(rng.integers(len(boxes)))]

    def sample(self, k: int, crop_size: int) -> Stage2Sample:
        """Global sample ``k`` with a ``crop_size`` scene crop (pure function of config, seed, ``k``, size)."""
        rng = np.random.default_rng([self.seed, 2, k])
        params = self.degradation.sample(rng)
        path = self.scene_for(k)
        clean = self._image(path)
        h0, w0 = clean.shape[:2]
        scale = max(float(rng.uniform(*self.cfg.scale_range)), crop_size / min(h0, w0))
        scene = _resize(clean, scale)
        h, w = scene.shape[:2]
        if min(h, w) < crop_size:  # rounding
            raise InputImageError(f"'{path}' is too small ({w}x{h}) for a {crop_size} px crop after resizing.")
        cy, cx = int(rng.integers(h - crop_size + 1)), int(rng.integers(w - crop_size + 1))
        crop_box = (cx, cy, cx + crop_size, cy + crop_size)
        face_box = self._scene_face(path, scene, scale, rng)
        if face_box is not None:
            m = self.cfg.region_margin
            region = (max(min(crop_box[0], face_box[0]) - m, 0), max(min(crop_box[1], face_box[1]) - m, 0),
                      min(max(crop_box[2], face_box[2]) + m, w), min(max(crop_box[3], face_box[3]) + m, h))
            lq_region = self.degrade(scene[region[1]:region[3], region[0]:region[2]], params)

            def cut(img: np.ndarray, box: tuple[int, int, int, int], origin=(0, 0)) -> np.ndarray:
                return img[box[1] - origin[1]:box[3] - origin[1], box[0] - origin[0]:box[2] - origin[0]]

            lq = cut(lq_region, crop_box, region[:2])
            face_lq = cut(lq_region, face_box, region[:2])
            face_gt = cut(scene, face_box)
            return Stage2Sample(
                hq=to_float(cut(scene, crop_box)), lq=np.ascontiguousarray(lq), face_lq=np.ascontiguousarray(face_lq),
                face_hq=self._hq(face_lq, face_gt, rng), params=params, face_source="scene", scene_path=str(path),
                face_path=str(path), scale=scale, crop_box=crop_box, region_box=region, face_box=face_box,
            )
        gt_crop = np.ascontiguousarray(scene[cy:cy + crop_size, cx:cx + crop_size])
        lq = self.degrade(gt_crop, params)
        fpath = self.pool_paths[int(rng.integers(len(self.pool_paths)))]
        face = self._image(fpath, limit=False)
        fh, fw = face.shape[:2]
        keep = 1.0 - float(rng.uniform(0.0, self.cfg.pool_face_jitter))
        side = max(int(round(min(fh, fw) * keep)), 1)
        fy, fx = int(rng.integers(fh - side + 1)), int(rng.integers(fw - side + 1))
        native = int(rng.integers(self.cfg.pool_face_sizes[0], self.cfg.pool_face_sizes[1] + 1))
        face_gt = face[fy:fy + side, fx:fx + side]
        face_gt = cv2.resize(face_gt, (native, native), interpolation=cv2.INTER_AREA if native < side else cv2.INTER_CUBIC)
        face_lq = self.degrade(face_gt, params)
        return Stage2Sample(
            hq=to_float(gt_crop), lq=lq, face_lq=face_lq, face_hq=self._hq(face_lq, face_gt, rng), params=params,
            face_source="pool", scene_path=str(path), face_path=str(fpath), scale=scale, crop_box=crop_box,
            region_box=crop_box, face_box=None,
        )


__all__ = [
    "Stage2DataConfig",
    "Stage2Sample",
    "Stage2Batch",
    "Stage2Data",
    "FaceBoxCache",
    "expand_images",
    "load_heldout",
    "is_excluded",
    "resolve_path",
]
