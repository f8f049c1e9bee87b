"""Plain text: unsupervised SimCSE. The same text twice, under two dropout masks, is the
positive pair, against the batch's other texts (in-batch negatives, pairs.info_nce). No gold
standard: only its loss is scored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from tokenizers import Tokenizer

from sentcli.config import TaskConfig, TaskKind, TrainConfig
from sentcli.data.batching import encode_rows
from sentcli.data.pairs import Shape
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
from sentcli.objectives.pairs import info_nce

if TYPE_CHECKING:
    from datasets import Dataset


class SimCSE:
    outputs: Literal["logits", "vectors"] = "vectors"
    views = 2  # two dropout masks over the same text
    scorable = False
    headline: str | None = None

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
        return Encoded([encode_rows(tok, ds, block)], None)

    def vector_loss(
        self, sides: list[torch.Tensor], target: torch.Tensor | None, n: int, ranks: Dist
    ) -> torch.Tensor:
        return info_nce(sides[0], sides[1:], self.scale, n, ranks)

    def vectors(self, model: MultiTaskModel, batch: Batch) -> list[torch.Tensor]:
        return embed_sides(model, batch)

    def loss(self, model: MultiTaskModel, batch: Batch) -> torch.Tensor:
        return self.vector_loss(self.vectors(model, batch), None, batch.n, self.ranks)

    def metrics(self, outputs: list[np.ndarray], target: np.ndarray | None) -> dict[str, Any]:
        return {}

    def scores(
        self, model: MultiTaskModel, enc: Encoded, outputs: list[np.ndarray], full: bool
    ) -> dict[str, Any]:
        out = {"val_loss": split_loss(self.vector_loss, outputs, None, self.size, self.views)}
        return out | ({"kind": str(TaskKind.text), "pairs": len(enc)} if full else {})

    def plot(
        self, report: Path, split: str, scores: dict[str, Any], outputs: list[np.ndarray],
        enc: Encoded,
    ) -> None:  # fmt: skip
        pass  # a loss alone: the loss curve shows it
