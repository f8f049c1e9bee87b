"""Batched inference over token id arrays: sentence vectors and task logits, in input order."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sentcli.data import collate, length_batches
from sentcli.model import MultiTaskModel
from sentcli.train import autocast


@torch.inference_mode()
def apply_batched(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    seqs: list[np.ndarray],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """`fn(ids, mask) → [B, D]` over length-sorted batches; row i of the result is seqs[i]."""
    if not seqs:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    out: np.ndarray | None = None
    for idx in length_batches(lengths, batch_size):
        ids, mask = collate([seqs[i] for i in idx])
        with autocast(device, dtype):
            rows = fn(ids.to(device), mask.to(device)).float().cpu().numpy()
        if out is None:
            out = np.empty((len(seqs), rows.shape[1]), dtype=np.float32)
        out[idx] = rows  # scatter back: restores the input order
    assert out is not None
    return out


def predict_logits(
    model: MultiTaskModel,
    task: str,
    seqs: list[np.ndarray],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Logits [N, n_labels] of `task`'s head for each token id array."""
    model.eval()
    return apply_batched(lambda i, m: model(i, m, task)[0], seqs, batch_size, device, dtype)
