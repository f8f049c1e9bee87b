"""What a task kind is to the rest of sentcli (`Objective`): how its rows are encoded, its
loss on a batch, its scores on a split, its plot and whether the model holds a head for it.
Training batches every kind the same way (`Batch`: all sides of a step's rows in one
forward pass); the kind decides what the outputs mean."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from tokenizers import Tokenizer

from sentcli.config import TaskConfig, TrainConfig
from sentcli.data.pairs import Shape, load_pairs
from sentcli.dist import Dist
from sentcli.model import MultiTaskModel

if TYPE_CHECKING:
    from datasets import Dataset

VectorsFn = Callable[["Dataset"], np.ndarray]
"""Target vectors [N, D] for a split's texts (distillation: a teacher run's, cached)."""
Splits = dict[str, "Dataset"]
"""A task's loaded splits: train, validation and, when the source has one, test."""


@dataclass
class Encoded:
    """One split of a task, tokenized: token ids per side (one side for labelled and plain
    texts; two or three for pairs) and the target (int labels, float scores, the teacher's
    vectors, or None)."""

    sides: list[list[np.ndarray]]
    target: np.ndarray | None

    def __len__(self) -> int:
        return len(self.sides[0])


@dataclass
class Batch:
    """One task's part of a training step, on the device: every side's texts (each `views`
    times) in one [sides · views · rows, T] batch, so one forward pass embeds them all."""

    task: str
    ids: torch.Tensor
    mask: torch.Tensor
    rows: int
    """Texts per side (this rank's share)."""
    n: int
    """Rows of the global batch: under torchrun the in-batch candidates are every rank's."""
    target: torch.Tensor | None
    objective: Objective
    padded: bool | None = None
    """Whether any text is shorter than the batch (known from the lengths; None: look)."""


class Objective(Protocol):
    """One task kind, bound to one task of one run (its config, the run's training settings
    and processes)."""

    outputs: Literal["logits", "vectors"]
    """What its scores are computed from: its head's logits, or every side's vectors."""
    views: int
    """Copies of each text a training step embeds (SimCSE: two, under two dropout masks)."""
    scorable: bool
    """A source of this kind can score any run that embeds (it holds a gold standard)."""
    headline: str | None
    """Its headline metric, higher is better (--best-by metric); None: it has only its loss.
    One of metrics.HEADLINE."""

    def head(self, width: int) -> int | None:
        """The outputs of its head on `width`-wide vectors (None: no head)."""
        ...

    def load(
        self, shape: Shape, splits: dict[str, Dataset], names: list[str] | None, resume: bool
    ) -> tuple[TaskConfig, Splits]:
        """The task's checked splits (a seeded share of train held out when there is no
        validation split) and its config with the columns and labels resolved."""
        ...

    def encode(self, ds: Dataset, tok: Tokenizer, block: int, targets: VectorsFn | None) -> Encoded:
        """A loaded split (columns text[, label] or a, b[, c][, score]) tokenized; `targets`
        gives the split's target vectors where the run has some (distillation)."""
        ...

    def loss(self, model: MultiTaskModel, batch: Batch) -> torch.Tensor:
        """The task's mean loss on `batch` (`model`: a MultiTaskModel)."""
        ...

    def metrics(self, outputs: list[np.ndarray], target: np.ndarray | None) -> dict[str, Any]:
        """Its scores from a split's outputs (no loss): accuracy and F1, Spearman, recall@1…"""
        ...

    def scores(
        self, model: MultiTaskModel, enc: Encoded, outputs: list[np.ndarray], full: bool
    ) -> dict[str, Any]:
        """Validation (or, `full`, test) scores of a split: its loss and `metrics`."""
        ...

    def plot(
        self, report: Path, split: str, scores: dict[str, Any], outputs: list[np.ndarray],
        enc: Encoded,
    ) -> None:  # fmt: skip
        """Its picture of a split's scores in `report` (none for some kinds)."""
        ...


class VectorObjective(Objective, Protocol):
    """A task kind whose loss is computed on sentence vectors (what Matryoshka wraps)."""

    spec: TaskConfig

    def vectors(self, model: MultiTaskModel, batch: Batch) -> list[torch.Tensor]:
        """Each side's vectors [rows, C] that `vector_loss` compares."""
        ...

    def vector_loss(
        self, sides: list[torch.Tensor], target: torch.Tensor | None, n: int, ranks: Dist
    ) -> torch.Tensor:
        """The task's loss on (possibly cut) vectors; it normalises them itself."""
        ...


VectorLoss = Callable[[list[torch.Tensor], torch.Tensor | None, int, Dist], torch.Tensor]
"""A loss on sentence vectors: (each side's vectors [B, C], the target or None, the global
batch's rows, the processes)."""


def embed_sides(model: MultiTaskModel, batch: Batch) -> list[torch.Tensor]:
    """Each side's sentence vectors [rows, C], from one forward pass over all of them."""
    vectors = model.embed(batch.ids, batch.mask, batch.padded)  # [sides · rows, C]
    return list(torch.split(vectors, batch.rows))


def split_loss(
    loss: VectorLoss, sides: list[np.ndarray], target: np.ndarray | None, size: int, views: int
) -> float:
    """A vector loss over a whole split's vectors, in batches of `size` (one process: the
    vectors are all here), each batch weighted by its rows (a short last one counts less)."""
    losses = []
    for i in range(0, len(sides[0]), size):
        part = [torch.from_numpy(s[i : i + size]) for s in sides] * views
        y = None if target is None else torch.from_numpy(target[i : i + size])
        losses.append(float(loss(part, y, len(part[0]), Dist())) * len(part[0]))
    return float(np.sum(losses)) / len(sides[0])


def load_pair_task(
    spec: TaskConfig, shape: Shape, splits: dict[str, Dataset], train: TrainConfig
) -> tuple[TaskConfig, Splits]:
    """A task of texts without labels (pairs, triplets, plain text) loaded: its columns and,
    for scored pairs, the train split's score range kept in its config."""
    pd = load_pairs(spec, splits, shape, train.val_fraction, train.seed)
    done = replace(
        spec, pair_columns=shape.pair_columns, score_column=shape.score_column,
        score_range=pd.score_range,
    )  # fmt: skip
    return done, {"train": pd.train, "validation": pd.validation} | (
        {"test": pd.test} if pd.test is not None else {}
    )
