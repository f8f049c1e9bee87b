"""Positive pairs and triplets (anchor, positive[, hard negative]): in-batch negatives
(InfoNCE, as sentence-transformers' MultipleNegativesRankingLoss): each anchor's positive
against every other positive (and hard negative) of the global batch; scored by recall@1
and MRR of each anchor's positive among all the split's positives.

Under torchrun the in-batch candidates are the global batch: the ranks' vectors are
gathered with their gradient, so N processes train like one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from tokenizers import Tokenizer

from sentcli.config import TaskConfig, TaskKind, TrainConfig
from sentcli.data.batching import encode_rows
from sentcli.data.pairs import SIDES, Shape
from sentcli.dist import Dist
from sentcli.model import MultiTaskModel
from sentcli.objectives.base import (
    Batch,
    Encoded,
    Splits,
    VectorsFn,
    embed_sides,
    load_pair_task,
    split_loss,
)

if TYPE_CHECKING:
    from datasets import Dataset


def _global(t: torch.Tensor, n: int, ranks: Dist) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Every rank's rows of a global batch of `n` rows (strided shards, padded to one size):
    (the rows [world · m, C], where this rank's block starts, which rows are padding)."""
    if not ranks.on:
        return t, 0, torch.zeros(len(t), dtype=torch.bool, device=t.device)
    m = -(-n // ranks.world)
    sizes = [len(range(r, n, ranks.world)) for r in range(ranks.world)]
    padded = F.pad(t, (0, 0, 0, m - len(t))).contiguous()
    # all_gather with autograd: its backward sums each rank's gradient into the rank that
    # owns the rows, so N processes train like one process with the global batch
    parts = dist_nn.all_gather(padded)  # type: ignore[no-untyped-call]
    pad = torch.tensor([i >= s for s in sizes for i in range(m)], device=t.device)
    return torch.cat(parts), ranks.rank * m, pad


def info_nce(
    anchors: torch.Tensor, candidates: list[torch.Tensor], scale: float, n: int, ranks: Dist
) -> torch.Tensor:
    """Cross-entropy of each anchor's own positive (candidates[0][i]) among every candidate
    of the global batch of `n` rows (positives, then hard negatives), on scaled cosines."""
    gathered, pads, start = [], [], 0
    for j, c in enumerate(candidates):
        g, block_start, pad = _global(F.normalize(c.float(), dim=-1), n, ranks)  # fp32: gloo
        start = block_start if j == 0 else start  # the positives come first
        gathered.append(g)
        pads.append(pad)
    cands = torch.cat(gathered)  # [K, C]
    sims = scale * F.normalize(anchors.float(), dim=-1) @ cands.T  # [B, K]
    sims = sims.masked_fill(torch.cat(pads)[None, :], float("-inf"))
    target = torch.arange(len(anchors), device=anchors.device) + start
    return F.cross_entropy(sims.float(), target)


def retrieval(anchors: np.ndarray, positives: np.ndarray, chunk: int = 1024) -> dict[str, float]:
    """Recall@1 and MRR of each anchor's positive among all the split's positives (cosine;
    ties count against it), in chunks of anchors: memory stays chunk × N."""
    a = anchors / np.maximum(np.linalg.norm(anchors, axis=1, keepdims=True), 1e-12)
    p = positives / np.maximum(np.linalg.norm(positives, axis=1, keepdims=True), 1e-12)
    ranks = []
    for start in range(0, len(a), chunk):
        sims = a[start : start + chunk] @ p.T  # [c, N]
        own = sims[np.arange(len(sims)), np.arange(start, start + len(sims))]
        ranks.append((sims >= own[:, None]).sum(axis=1))  # itself included: ties count against
    r = np.concatenate(ranks)
    return {"recall@1": float(np.mean(r == 1)), "mrr": float(np.mean(1.0 / r))}


class Pairs:
    outputs: Literal["logits", "vectors"] = "vectors"
    views = 1
    scorable = True
    headline: str | None = "mrr"

    def __init__(self, spec: TaskConfig, train: TrainConfig, ranks: Dist) -> None:
        self.train = train
        self.spec, self.ranks = spec, ranks
        self.scale, self.size = train.similarity_scale, train.batch_size

    def load(
        self, shape: Shape, splits: dict[str, Dataset], names: list[str] | None, resume: bool
    ) -> tuple[TaskConfig, Splits]:
        return load_pair_task(self.spec, shape, splits, self.train)

    def head(self, width: int) -> int | None:
        return None

    def encode(self, ds: Dataset, tok: Tokenizer, block: int, targets: VectorsFn | None) -> Encoded:
        sides = [encode_rows(tok, ds, block, c) for c in SIDES[: len(self.spec.pair_columns)]]
        return Encoded(sides, None)

    def vector_loss(
        self, sides: list[torch.Tensor], target: torch.Tensor | None, n: int, ranks: Dist
    ) -> torch.Tensor:
        return info_nce(sides[0], sides[1:], self.scale, n, ranks)

    def vectors(self, model: MultiTaskModel, batch: Batch) -> list[torch.Tensor]:
        return embed_sides(model, batch)

    def loss(self, model: MultiTaskModel, batch: Batch) -> torch.Tensor:
        return self.vector_loss(self.vectors(model, batch), None, batch.n, self.ranks)

    def metrics(self, outputs: list[np.ndarray], target: np.ndarray | None) -> dict[str, Any]:
        return retrieval(outputs[0], outputs[1])

    def scores(
        self, model: MultiTaskModel, enc: Encoded, outputs: list[np.ndarray], full: bool
    ) -> dict[str, Any]:
        out = {"val_loss": split_loss(self.vector_loss, outputs, None, self.size, 1)}
        out |= self.metrics(outputs, None)
        return out | ({"kind": str(TaskKind.pairs), "pairs": len(enc)} if full else {})

    def plot(
        self, report: Path, split: str, scores: dict[str, Any], outputs: list[np.ndarray],
        enc: Encoded,
    ) -> None:  # fmt: skip
        pass  # recall@1 and MRR say it; a picture of ranks would not add to them
