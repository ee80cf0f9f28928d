"""Training pairs for FaDeX, made on the fly from clean face images.

Each batch holds ``K`` degradation operators, each applied to ``M`` crops of *different* images
("same D applied to different images"), so that ``K * M`` pairs form ``K`` groups of positives:

    sampler = FacePairSampler(paths, crop_size=96, ops_per_batch=8, images_per_op=4, seed=0)
    batch = sampler.sample_batch()      # batch.lq, batch.hq: uint8 (32, 96, 96, 3); batch.labels (32,)

An operator is a Real-ESRGAN second-order degradation (``RealESRGANDegradation.sample(rng)``), a
fixed preset (D1..D4) with probability ``preset_prob``, or an entry of a fixed pool of sampled
operators (``op_pool_size > 0``) so that operators recur across batches. Operator ids are global:
preset ``i`` has id ``i``, pool entry ``j`` has id ``len(presets) + j``, and every freshly sampled
operator gets a new id, so queue entries from earlier batches are positives only when they truly
share the operator.

The HQ side is the clean crop itself (non-reference mode), or, with ``hq_fn``, any function of the
LQ and clean crops. *Ref-FR pairs* (``reffr_prob``) come from aligned faces of people with several
photos: the whole face is degraded, restored by a reference-based face restorer from the person's
other photos, and both are cropped at the same place, so FaDeX also learns from the imperfect HQ
faces it gets at inference. No worker processes: everything is drawn
from one seeded ``numpy.random.Generator``, whose state can be saved and restored for exact resume.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import torch

from ..errors import InputImageError
from ..imageio import load_image, to_float, to_uint8

logger = logging.getLogger(__name__)

HQFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class PairBatch:
    """One batch of face pairs.

    Args:
        lq: ``np.uint8 (N, S, S, 3)`` degraded crops, ``N = ops_per_batch * images_per_op``.
        hq: ``np.uint8 (N, S, S, 3)`` clean crops (or Ref-FR outputs), same shape.
        labels: ``np.int64 (N,)`` operator id of each pair.
        image_index: ``np.int64 (N,)`` index of the source image of each pair.
        ops: ``list`` of the ``K`` operators' parameters, in label order of appearance.
    """

    lq: np.ndarray
    hq: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    ops: list

    def tensors(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lq, hq)`` as float32 tensor images ``(N, 3, S, S)`` in ``[0, 1]`` and ``labels`` as long ``(N,)``."""

        def conv(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(device).permute(0, 3, 1, 2).float().div_(255.0).contiguous()

        return conv(self.lq), conv(self.hq), torch.from_numpy(self.labels).to(device)


def with_noise_seed(params: Any, rng: np.random.Generator) -> Any:
    """``params`` with a fresh ``noise_seed`` drawn from ``rng`` (unchanged if it has no such field)."""
    if dataclasses.is_dataclass(params) and hasattr(params, "noise_seed"):
        return dataclasses.replace(params, noise_seed=int(rng.integers(2**31 - 1)))
    return params


def load_face_images(paths: Sequence[str | os.PathLike | np.ndarray], min_side: int) -> tuple[list[np.ndarray], list[str]]:
    """Load images (paths or uint8 arrays) and drop those with a side under ``min_side`` (logged).

    Returns the kept ``uint8 (H, W, 3)`` arrays and their names. Raises :class:`InputImageError`
    when no image is kept.
    """
    images, names, skipped = [], [], []
    for i, item in enumerate(paths):
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
                raise ValueError(f"image arrays must be uint8 (H, W, 3), got {item.dtype} {item.shape} at index {i}")
            img, name = item, f"array[{i}]"
        else:
            img, name = load_image(item), str(item)
        if min(img.shape[:2]) < min_side:
            skipped.append(name)
            continue
        images.append(img)
        names.append(name)
    if skipped:
        logger.warning("skipped %d image(s) smaller than %d px: %s", len(skipped), min_side, ", ".join(skipped[:5]))
    if not images:
        raise InputImageError(
            f"None of the {len(paths)} training image(s) is at least {min_side} px per side. "
            "Add larger face images or lower crop_size."
        )
    return images, names


class FacePairSampler:
    """Seeded, worker-free generator of (LQ, HQ, operator id) batches.

    Args:
        images: clean face images: paths, or ``uint8 (H, W, 3)`` arrays. Images with a side under
            ``crop_size`` are skipped.
        crop_size: side ``S`` of the square random crops, ``>= 32``.
        ops_per_batch: ``K``, operators per batch, ``>= 1`` (``>= 2`` to have negatives in the batch).
        images_per_op: ``M``, different images degraded by each operator, ``1 <= M <= len(images)``.
        rescale_range: ``(lo, hi)`` with ``0 < lo <= hi <= 1``: the clean image is first downscaled
            (area interpolation, so it stays clean) by a factor drawn in this range, never below the
            factor at which its short side equals ``crop_size``.
        preset_prob: probability, per operator, of using a fixed preset instead of a sampled one.
        op_pool_size: ``0`` samples a fresh operator each time; ``n > 0`` draws from ``n`` operators
            sampled once from the seed.
        degradation: object with ``sample(rng) -> params`` and ``apply(float_img, params) -> float_img``
            (same size); default ``RealESRGANDegradation(DegradationConfig())``.
        presets: ``{name: params}`` for ``preset_prob``; default ``degradation.PRESETS``.
        hq_fn: optional ``hq_fn(lq_uint8, gt_uint8) -> hq_uint8`` (same shape), e.g. a Ref-FR; the
            default uses the clean crop as HQ.
        vary_noise_seed: give each crop its own noise realisation (a fresh ``noise_seed``) while
            keeping every other parameter of the operator, so that positives share the noise
            *statistics*, not an identical noise pattern the encoder could match instead.
        reffr_faces: aligned faces grouped by identity (``[[uint8 (S, S, 3), ...], ...]``, at least 2
            photos per identity), the source of Ref-FR pairs; needs ``reffr``.
        reffr: a :class:`~face2scene_core.reffr.base.RefFR` whose ``restore(lq_face, references)``
            takes faces of that size.
        reffr_prob: probability, per operator group, that ``reffr_share`` of its ``M`` pairs are *Ref-FR pairs*: an
            aligned face degraded whole by the operator, restored by ``reffr`` from up to
            ``reffr_max_refs`` *other* photos of the same person, then LQ and Ref-FR output cropped at
            the same place. This is the HQ FaDeX sees at inference (the paper trains on both kinds).
        reffr_share: fraction of such a group made of Ref-FR pairs; the rest are GT pairs under the
            same operator, so that both kinds of HQ are positives of each other and share one code.
        reffr_max_refs: references per Ref-FR pair.
        shared_content_prob: probability that a batch degrades the *same* ``M`` crops by all ``K``
            operators (instead of ``M`` fresh images per operator). Such a batch holds
            same-content/different-operator negatives, the pairs the paper's Fig. 3 analysis asks
            FaDeX to tell apart; with ``0`` they almost never occur in a batch.
        seed: seed of the generator (everything random is drawn from it).
    """

    def __init__(
        self,
        images: Sequence[str | os.PathLike | np.ndarray],
        *,
        crop_size: int = 128,
        ops_per_batch: int = 5,
        images_per_op: int = 4,
        rescale_range: tuple[float, float] = (0.5, 1.0),
        preset_prob: float = 0.0,
        op_pool_size: int = 0,
        degradation: Any = None,
        presets: Mapping[str, Any] | None = None,
        hq_fn: HQFn | None = None,
        vary_noise_seed: bool = True,
        shared_content_prob: float = 0.0,
        reffr_faces: Sequence[Sequence[np.ndarray]] = (),
        reffr: Any = None,
        reffr_prob: float = 0.0,
        reffr_max_refs: int = 2,
        reffr_share: float = 0.5,
        seed: int = 0,
    ):
        if crop_size < 32:
            raise ValueError(f"crop_size must be >= 32, got {crop_size}")
        if ops_per_batch < 1 or images_per_op < 1:
            raise ValueError(f"ops_per_batch and images_per_op must be >= 1, got {ops_per_batch}, {images_per_op}")
        lo, hi = rescale_range
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"rescale_range must satisfy 0 < lo <= hi <= 1, got {rescale_range}")
        if not 0.0 <= preset_prob <= 1.0:
            raise ValueError(f"preset_prob must be in [0, 1], got {preset_prob}")
        if op_pool_size < 0:
            raise ValueError(f"op_pool_size must be >= 0, got {op_pool_size}")
        if not 0.0 <= shared_content_prob <= 1.0:
            raise ValueError(f"shared_content_prob must be in [0, 1], got {shared_content_prob}")
        if not 0.0 <= reffr_prob <= 1.0:
            raise ValueError(f"reffr_prob must be in [0, 1], got {reffr_prob}")
        if not 0.0 < reffr_share <= 1.0:
            raise ValueError(f"reffr_share must be in (0, 1], got {reffr_share}")
        self.reffr_faces = [list(group) for group in reffr_faces]
        if reffr_prob > 0:
            if reffr is None or not self.reffr_faces:
                raise ValueError("reffr_prob > 0 needs reffr_faces (aligned faces by identity) and a reffr")
            if any(len(g) < 2 for g in self.reffr_faces):
                raise ValueError("every identity in reffr_faces needs at least 2 photos (one degraded, others as references)")
            n_faces = sum(len(g) for g in self.reffr_faces)
            if images_per_op > n_faces:
                raise ValueError(f"images_per_op={images_per_op} needs at least that many reffr_faces, got {n_faces}")
            side = min(min(f.shape[:2]) for g in self.reffr_faces for f in g)
            if side < crop_size:
                raise ValueError(f"reffr_faces must be at least crop_size={crop_size} px, got {side}")
        self.reffr = reffr
        self.reffr_prob = float(reffr_prob)
        self.reffr_max_refs = int(reffr_max_refs)
        self.reffr_share = float(reffr_share)
        self._reffr_index = [(g, j) for g, group in enumerate(self.reffr_faces) for j in range(len(group))]
        if degradation is None or (presets is None and preset_prob > 0):
            from ..degradation import PRESETS, DegradationConfig, RealESRGANDegradation

            degradation = degradation if degradation is not None else RealESRGANDegradation(DegradationConfig())
            presets = PRESETS if presets is None else presets
        self.degradation = degradation
        self.preset_names = sorted(presets) if presets else []
        self.presets = [presets[k] for k in self.preset_names]
        if preset_prob > 0 and not self.presets:
            raise ValueError("preset_prob > 0 needs at least one preset")
        self.images, self.names = load_face_images(images, crop_size)
        if images_per_op > len(self.images):
            raise ValueError(
                f"images_per_op={images_per_op} needs at least that many usable images, got {len(self.images)}"
            )
        self.crop_size = int(crop_size)
        self.ops_per_batch = int(ops_per_batch)
        self.images_per_op = int(images_per_op)
        self.rescale_range = (float(lo), float(hi))
        self.preset_prob = float(preset_prob)
        self.hq_fn = hq_fn
        self.vary_noise_seed = bool(vary_noise_seed)
        self.shared_content_prob = float(shared_content_prob)
        self.seed = int(seed)
        pool_rng = np.random.default_rng([self.seed, 1])
        self.pool = [self.degradation.sample(pool_rng) for _ in range(op_pool_size)]
        self.rng = np.random.default_rng([self.seed, 0])
        self.next_label = len(self.presets) + len(self.pool)
        self.identity_label: int | None = None

    @property
    def batch_size(self) -> int:
        return self.ops_per_batch * self.images_per_op

    def state_dict(self) -> dict:
        """JSON-serialisable state (generator state and the next fresh operator id)."""
        return {"rng": self.rng.bit_generator.state, "next_label": self.next_label, "identity_label": self.identity_label}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the following batches are exactly those that would have followed."""
        self.rng.bit_generator.state = dict(state["rng"])
        self.next_label = int(state["next_label"])
        identity = state.get("identity_label")
        self.identity_label = None if identity is None else int(identity)

    def _sample_op(self) -> tuple[int, Any]:
        if self.presets and self.rng.random() < self.preset_prob:
            i = int(self.rng.integers(len(self.presets)))
            return i, self.presets[i]
        if self.pool:
            j = int(self.rng.integers(len(self.pool)))
            return len(self.presets) + j, self.pool[j]
        label = self.next_label
        self.next_label += 1
        params = self.degradation.sample(self.rng)
        if getattr(self.degradation, "is_identity", None) is not None and self.degradation.is_identity(params):
            # "no degradation" is one operator, however often it is drawn: its pairs are positives of each other
            if self.identity_label is None:
                self.identity_label = label
            label = self.identity_label
        return label, params

    def _random_crop(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        s_min = self.crop_size / min(h, w)
        scale = max(float(self.rng.uniform(*self.rescale_range)), s_min)
        if scale < 1.0:
            size = (max(self.crop_size, round(w * scale)), max(self.crop_size, round(h * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            h, w = image.shape[:2]
        top = int(self.rng.integers(h - self.crop_size + 1))
        left = int(self.rng.integers(w - self.crop_size + 1))
        return np.ascontiguousarray(image[top : top + self.crop_size, left : left + self.crop_size])

    def _realisation(self, params: Any) -> Any:
        return with_noise_seed(params, self.rng) if self.vary_noise_seed else params

    def degrade(self, crop: np.ndarray, params: Any) -> np.ndarray:
        """Apply ``params`` to a uint8 crop; returns the uint8 LQ crop (quantised like a real photo)."""
        lq = to_uint8(self.degradation.apply(to_float(crop), params))
        if lq.shape != crop.shape:
            raise ValueError(f"the degradation changed the crop size {crop.shape} -> {lq.shape}; it must keep the size")
        return lq

    def _reffr_pairs(self, params: Any) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``M`` pairs for one operator, ``(image index, lq crop, hq crop)``: ``ceil(M * reffr_share)``
        Ref-FR pairs (at least one), then GT pairs of plain images for the rest.

        Mixing both kinds under one operator label makes a Ref-FR pair and a GT pair of the same
        operator positives of each other, so the code of a Ref-FR pair is pulled to the code a GT pair
        gets (the codes the restorer learns from). Image indices of Ref-FR faces follow those of
        ``images`` (``len(images) + k``).
        """
        out = []
        s = self.crop_size
        n_ref = max(1, math.ceil(self.images_per_op * self.reffr_share))
        for k in self.rng.choice(len(self._reffr_index), size=n_ref, replace=False):
            g, j = self._reffr_index[int(k)]
            group = self.reffr_faces[g]
            gt = group[j]
            lq_face = self.degrade(gt, self._realisation(params))
            refs = [f for r, f in enumerate(group) if r != j][: self.reffr_max_refs]
            hq_face = np.asarray(self.reffr.restore(lq_face, refs))
            if hq_face.shape != gt.shape or hq_face.dtype != np.uint8:
                raise ValueError(f"the Ref-FR must return uint8 {gt.shape}, got {hq_face.dtype} {hq_face.shape}")
            h, w = gt.shape[:2]
            top, left = int(self.rng.integers(h - s + 1)), int(self.rng.integers(w - s + 1))
            box = (slice(top, top + s), slice(left, left + s))
            out.append((len(self.images) + int(k), np.ascontiguousarray(lq_face[box]), np.ascontiguousarray(hq_face[box])))
        rest = self.images_per_op - n_ref
        if rest:
            out.extend(self._gt_pairs(self._fresh_crops(rest), params))
        return out

    def _fresh_crops(self, n: int):
        """``n`` different images drawn now; their crops are cut lazily, one per pair, so that crops and
        noise seeds interleave in the generator stream (the order of earlier runs)."""
        picks = self.rng.choice(len(self.images), size=n, replace=False)
        return ((int(i), self._random_crop(self.images[i])) for i in picks)

    def _gt_pairs(self, crops, params: Any):
        """``(image index, lq, hq)`` for each ``(image index, clean crop)``: LQ = crop degraded by ``params``,
        HQ = the clean crop (or ``hq_fn(lq, crop)``)."""
        for i, gt in crops:
            lq = self.degrade(gt, self._realisation(params))
            hq = gt if self.hq_fn is None else np.asarray(self.hq_fn(lq, gt))
            if hq.shape != gt.shape or hq.dtype != np.uint8:
                raise ValueError(f"hq_fn must return uint8 {gt.shape}, got {hq.dtype} {hq.shape}")
            yield i, lq, hq

    def sample_batch(self) -> PairBatch:
        """Draw the next batch (``K`` operators x ``M`` different images).

        With probability ``shared_content_prob`` the ``M`` crops are drawn once and every operator
        degrades the same crops; otherwise each operator gets ``M`` freshly drawn images and crops,
        and with probability ``reffr_prob`` they are Ref-FR pairs (see the class doc).
        """
        lqs, hqs, labels, idxs, ops = [], [], [], [], []
        shared = None
        if self.shared_content_prob > 0 and self.rng.random() < self.shared_content_prob:
            picks = self.rng.choice(len(self.images), size=self.images_per_op, replace=False)
            shared = [(int(i), self._random_crop(self.images[i])) for i in picks]
        for _ in range(self.ops_per_batch):
            label, params = self._sample_op()
            ops.append(params)
            if shared is None and self.reffr_prob > 0 and self.rng.random() < self.reffr_prob:
                pairs = self._reffr_pairs(params)
            else:
                pairs = self._gt_pairs(iter(shared) if shared is not None else self._fresh_crops(self.images_per_op), params)
            for i, lq, hq in pairs:
                lqs.append(lq)
                hqs.append(hq)
                labels.append(label)
                idxs.append(i)
        return PairBatch(
            lq=np.stack(lqs),
            hq=np.stack(hqs),
            labels=np.asarray(labels, dtype=np.int64),
            image_index=np.asarray(idxs, dtype=np.int64),
            ops=ops,
        )

    def __iter__(self) -> "FacePairSampler":
        return self

    def __next__(self) -> PairBatch:
        return self.sample_batch()


__all__ = ["FacePairSampler", "PairBatch", "load_face_images", "with_noise_seed"]
