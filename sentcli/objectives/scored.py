"""Scored pairs (two texts and a number, STS-style): CoSENT (every pair of pairs in the batch
whose gold scores are ordered should have their cosines ordered the same way; the scale of
the scores does not matter) or cosine-MSE (the cosine regresses onto the score mapped to
0..1); scored by Spearman and Pearson of cosine against the gold scores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from sentcli.config import SimilarityLoss, TaskConfig, TaskKind, TrainConfig
from sentcli.data.batching import column_array, encode_rows
from sentcli.data.pairs import SIDES, Shape
from sentcli.dist import Dist
from sentcli.errors import DataError
from sentcli.metrics import plot_scatter
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


def cosent(cos: torch.Tensor, scores: torch.Tensor, scale: float) -> torch.Tensor:
    """log(1 + Σ exp(scale · (cos_j − cos_i))) over the pairs i, j with score_i > score_j."""
    diff = scale * (cos[None, :] - cos[:, None])  # [B, B]: cos_j - cos_i
    ordered = scores[:, None] > scores[None, :]  # pair i should be above pair j
    diff = diff.masked_fill(~ordered, float("-inf"))
    zero = torch.zeros(1, device=cos.device, dtype=diff.dtype)
    return torch.logsumexp(torch.cat([zero, diff.flatten()]), dim=0)


def cosine_mse(cos: torch.Tensor, scores: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return F.mse_loss(cos, (scores - low) / (high - low))


def _ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks; tied values share their mean rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return np.asarray(np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's of the ranks."""
    return pearson(_ranks(x), _ranks(y))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.asarray((a * b).sum(axis=1))


class Scored:
    outputs: Literal["logits", "vectors"] = "vectors"
    views = 1
    scorable = True
    headline: str | None = "spearman"

    def __init__(self, spec: TaskConfig, train: TrainConfig, ranks: Dist) -> None:
        self.train = train
        self.spec, self.ranks = spec, ranks
        self.loss_kind, self.scale, self.size = (
            train.similarity_loss,
            train.similarity_scale,
            train.batch_size,
        )

    def load(
        self, shape: Shape, splits: dict[str, Dataset], names: list[str] | None, resume: bool
    ) -> tuple[TaskConfig, Splits]:
        return load_pair_task(self.spec, shape, splits, self.train)

    def head(self, width: int) -> int | None:
        return None

    def encode(self, ds: Dataset, tok: Tokenizer, block: int, targets: VectorsFn | None) -> Encoded:
        sides = [encode_rows(tok, ds, block, c) for c in SIDES[: len(self.spec.pair_columns)]]
        return Encoded(sides, column_array(ds, "score", np.float32))

    def vector_loss(
        self, sides: list[torch.Tensor], target: torch.Tensor | None, n: int, ranks: Dist
    ) -> torch.Tensor:
        assert target is not None
        cos = F.cosine_similarity(sides[0].float(), sides[1].float(), dim=-1)
        if self.loss_kind == SimilarityLoss.cosent:
            return cosent(cos, target, self.scale)
        return cosine_mse(cos, target, *self.spec.score_range)

    def vectors(self, model: MultiTaskModel, batch: Batch) -> list[torch.Tensor]:
        return embed_sides(model, batch)

    def loss(self, model: MultiTaskModel, batch: Batch) -> torch.Tensor:
        return self.vector_loss(self.vectors(model, batch), batch.target, batch.n, self.ranks)

    def metrics(self, outputs: list[np.ndarray], target: np.ndarray | None) -> dict[str, Any]:
        assert target is not None
        if np.ptp(target) == 0:
            raise DataError(
                f"every gold score of the split is {target[0]:g}: there is no ranking to score "
                "against (an unlabelled test split?); give pairs with their scores"
            )
        cos = cosines(outputs[0], outputs[1])
        return {"spearman": spearman(cos, target), "pearson": pearson(cos, target)}

    def scores(
        self, model: MultiTaskModel, enc: Encoded, outputs: list[np.ndarray], full: bool
    ) -> dict[str, Any]:
        out = {"val_loss": split_loss(self.vector_loss, outputs, enc.target, self.size, 1)}
        out |= self.metrics(outputs, enc.target)
        return out | ({"kind": str(TaskKind.scored), "pairs": len(enc)} if full else {})

    def plot(
        self, report: Path, split: str, scores: dict[str, Any], outputs: list[np.ndarray],
        enc: Encoded,
    ) -> None:  # fmt: skip
        assert enc.target is not None
        name = self.spec.name
        title = f"{name} ({split}, Spearman {100 * scores['spearman']:.1f})"
        cos = cosines(outputs[0], outputs[1])
        plot_scatter(report / f"similarity_{name}.png", cos, enc.target, title)
