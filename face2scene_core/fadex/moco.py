"""MoCo-style contrastive wrapper for FaDeX, with degradation-operator labels.

After MoCo (He et al., ``moco/builder.py``), written anew for labelled positives:

* a *query* encoder trained by backprop and a *key* encoder that is its exponential moving
  average (momentum 0.999), updated under ``torch.no_grad()``;
* a FIFO queue of past key embeddings **and their operator ids** (registered buffers), used as
  extra negatives, and as extra positives when an entry shares the query's operator;
* :meth:`MoCoFaDeX.forward` returns logits and masks; the loss,
  :func:`multi_positive_info_nce`, lives outside (supervised-contrastive InfoNCE: every sample
  that shares the degradation operator is a positive).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .model import FaDeX

#: Label of a queue slot that was never filled; such slots take part in no logit.
EMPTY_LABEL = -1


@dataclass
class MoCoOutput:
    """What :func:`multi_positive_info_nce` needs, from one :meth:`MoCoFaDeX.forward` call.

    Args:
        logits: float32 ``(B, B + Q)``: cosine similarity / temperature of each query against the
            batch keys (columns ``0..B-1``) then the queue as it was *before* this batch was enqueued.
        positive_mask: bool ``(B, B + Q)``: the column shares the query's operator id.
        valid_mask: bool ``(B, B + Q)``: the column takes part in the softmax (filled queue slots).
        query: float32 ``(B, D)`` unit-norm query embeddings (with grad).
        keys: float32 ``(B, D)`` unit-norm key embeddings (no grad).
    """

    logits: torch.Tensor
    positive_mask: torch.Tensor
    valid_mask: torch.Tensor
    query: torch.Tensor
    keys: torch.Tensor


class MoCoFaDeX(nn.Module):
    """Query/key FaDeX encoders with a labelled FIFO queue.

    Args:
        encoder: the query :class:`FaDeX` (trained). The key encoder starts as a deep copy of it.
        queue_size: number of past key embeddings kept (paper setting 4096; smaller on CPU), ``>= 1``.
        momentum: EMA momentum ``m`` of the key encoder, ``k = m * k + (1 - m) * q``, in ``[0, 1]``
            (0.999).
        temperature: softmax temperature ``tau`` dividing the cosine similarities, ``> 0`` (0.07).
    """

    def __init__(self, encoder: FaDeX, *, queue_size: int = 4096, momentum: float = 0.999, temperature: float = 0.07):
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        dim = encoder.embed_dim
        self.register_buffer("queue", torch.zeros(queue_size, dim))  # q, d
        self.register_buffer("queue_labels", torch.full((queue_size,), EMPTY_LABEL, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @property
    def queue_size(self) -> int:
        return int(self.queue.shape[0])

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA of the query parameters into the key encoder (buffers are the key's own, as in MoCo)."""
        for p_q, p_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            p_k.mul_(self.momentum).add_(p_q.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Write ``keys (B, D)`` and ``labels (B,)`` at the pointer, oldest entries first out (FIFO)."""
        if keys.ndim != 2 or keys.shape[1] != self.queue.shape[1] or labels.shape != keys.shape[:1]:
            raise ValueError(f"keys must be (B, {self.queue.shape[1]}) with labels (B,), got {tuple(keys.shape)}, {tuple(labels.shape)}")
        keys, labels = keys[-self.queue_size :], labels[-self.queue_size :]
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % self.queue_size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_labels[idx] = labels.to(self.queue_labels.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % self.queue_size)

    def forward(self, lq: torch.Tensor, hq: torch.Tensor, labels: torch.Tensor, *, update_queue: bool = True) -> MoCoOutput:
        """One contrastive step's forward pass.

        Args:
            lq, hq: tensor images ``(B, 3, H, W)`` in ``[0, 1]`` (see :meth:`FaDeX.forward`).
            labels: long ``(B,)``, id of the degradation operator of each pair, ``>= 0``.
            update_queue: enqueue this batch's keys afterwards (``True`` in training).

        Returns:
            :class:`MoCoOutput`. Also runs the momentum update first (as MoCo does) when
            ``self.training`` and, if ``update_queue``, enqueues the keys last.
        """
        if labels.ndim != 1 or labels.shape[0] != lq.shape[0]:
            raise ValueError(f"labels must be (B,) = ({lq.shape[0]},), got {tuple(labels.shape)}")
        if (labels < 0).any():
            raise ValueError("operator labels must be >= 0 (-1 marks empty queue slots)")
        labels = labels.to(lq.device)
        query = self.encoder_q(lq, hq).embedding.float()  # b, d
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            keys = self.encoder_k(lq, hq).embedding.float()  # b, d
        queue = self.queue.clone()  # q, d  (snapshot: enqueue below writes in place)
        queue_labels = self.queue_labels.clone()
        columns = torch.cat([keys, queue], dim=0)  # b + q, d
        column_labels = torch.cat([labels, queue_labels])  # b + q
        logits = query @ columns.T / self.temperature  # b, b + q
        valid = (column_labels != EMPTY_LABEL)[None].expand_as(logits)
        positive = (labels[:, None] == column_labels[None, :]) & valid
        if update_queue:
            self.enqueue(keys, labels)
        return MoCoOutput(logits=logits, positive_mask=positive, valid_mask=valid, query=query, keys=keys)


def multi_positive_info_nce(logits: torch.Tensor, positive_mask: torch.Tensor, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Supervised-contrastive (multi-positive) InfoNCE loss.

    For each row ``i`` with at least one positive,
    ``loss_i = -mean_{p in P(i)} log( exp(l_ip) / sum_{a in V(i)} exp(l_ia) )``
    where ``P(i)`` are the positive columns and ``V(i)`` the valid ones; the result is the mean over
    rows that have a positive (rows without one are skipped; if none has, the loss is 0 with grad).

    Args:
        logits: float ``(B, N)``, similarities already divided by the temperature.
        positive_mask: bool ``(B, N)``, positives (must be a subset of the valid columns).
        valid_mask: bool ``(B, N)`` or ``None`` (all valid).

    Returns:
        scalar float32 tensor.
    """
    if logits.ndim != 2 or positive_mask.shape != logits.shape:
        raise ValueError(f"logits and positive_mask must be the same (B, N) shape, got {tuple(logits.shape)}, {tuple(positive_mask.shape)}")
    valid_mask = torch.ones_like(positive_mask) if valid_mask is None else valid_mask
    if valid_mask.shape != logits.shape:
        raise ValueError(f"valid_mask must have shape {tuple(logits.shape)}, got {tuple(valid_mask.shape)}")
    positive_mask = positive_mask & valid_mask
    logits = logits.float().masked_fill(~valid_mask, float("-inf"))
    log_prob = F.log_softmax(logits, dim=1).masked_fill(~valid_mask, 0.0)  # b, n
    n_pos = positive_mask.sum(dim=1)  # b
    has_pos = n_pos > 0
    per_row = -(log_prob * positive_mask).sum(dim=1) / n_pos.clamp(min=1)  # b
    if not has_pos.any():
        return (log_prob * 0.0).sum()  # 0, still connected to the graph
    return per_row[has_pos].mean()


__all__ = ["EMPTY_LABEL", "MoCoFaDeX", "MoCoOutput", "multi_positive_info_nce"]
