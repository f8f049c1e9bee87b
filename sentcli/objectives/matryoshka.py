"""Matryoshka: any similarity objective applied to each prefix of the sentence vector (the
first 256, 128, 64… dimensions), each prefix re-normalised, the losses summed with weights.
The prefixes then work as vectors of their own (`--dims N` at inference), where a model
trained on the full vector alone loses more when cut. Labelled tasks are not wrapped: their
heads read the whole vector."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from tokenizers import Tokenizer

from sentcli.config import TaskConfig
from sentcli.data.pairs import Shape
from sentcli.dist import Dist
from sentcli.errors import ConfigError
from sentcli.model import MultiTaskModel
from sentcli.objectives.base import Batch, Encoded, Splits, VectorObjective, VectorsFn

if TYPE_CHECKING:
    from datasets import Dataset


def prefix(vectors: np.ndarray, dims: int) -> np.ndarray:
    """The first `dims` dimensions of each row, L2-normalised again (a cut unit vector is
    shorter than 1, and shorter by a different amount per row)."""
    cut = np.asarray(vectors[:, :dims], dtype=np.float32)
    return np.asarray(cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12))


class Matryoshka:
    """A vector objective (`inner`) trained on each prefix width in `dims` (descending)."""

    def __init__(
        self, inner: VectorObjective, dims: list[int], weights: list[float], ranks: Dist
    ) -> None:
        self.inner, self.dims, self.ranks = inner, list(dims), ranks
        self.weights = list(weights) or [1.0] * len(dims)
        self.outputs: Literal["logits", "vectors"] = inner.outputs
        self.views, self.scorable = inner.views, inner.scorable
        self.headline = inner.headline
        self.spec: TaskConfig = inner.spec

    def head(self, width: int) -> int | None:
        if self.dims[0] > width:
            raise ConfigError(
                f"--matryoshka-dims {self.dims[0]}: the model's vectors are {width} wide; "
                f"give widths of {width} or less"
            )
        size = self.inner.head(width)
        if size is not None:  # a projection onto a teacher of another width
            raise ConfigError(
                f"--matryoshka-dims with task {self.spec.name}'s teacher of width {size} (the "
                f"model's is {width}): the prefixes would be the projection's, not the "
                "model's; distill from a teacher of the model's width"
            )
        return None

    def load(
        self, shape: Shape, splits: dict[str, Dataset], names: list[str] | None, resume: bool
    ) -> tuple[TaskConfig, Splits]:
        return self.inner.load(shape, splits, names, resume)

    def encode(self, ds: Dataset, tok: Tokenizer, block: int, targets: VectorsFn | None) -> Encoded:
        return self.inner.encode(ds, tok, block, targets)

    def loss(self, model: MultiTaskModel, batch: Batch) -> torch.Tensor:
        """Σ weight · the inner loss on each prefix (the inner losses normalise their
        vectors, so each prefix is compared as a unit vector)."""
        sides = self.inner.vectors(model, batch)
        total = torch.zeros((), device=batch.ids.device)
        for d, w in zip(self.dims, self.weights, strict=True):
            cut = [s[:, :d] for s in sides]
            total = total + w * self.inner.vector_loss(cut, batch.target, batch.n, self.ranks)
        return total

    def metrics(self, outputs: list[np.ndarray], target: np.ndarray | None) -> dict[str, Any]:
        """The inner scores at full width, and at each narrower prefix as `score@dims`."""
        width = outputs[0].shape[1]
        out = self.inner.metrics(outputs, target)
        for d in self.dims:
            if d < width:
                at = self.inner.metrics([prefix(o, d) for o in outputs], target)
                out |= {f"{k}@{d}": v for k, v in at.items()}
        return out

    def scores(
        self, model: MultiTaskModel, enc: Encoded, outputs: list[np.ndarray], full: bool
    ) -> dict[str, Any]:
        """The inner scores, with the loss the training minimises (the weighted sum over the
        prefixes) and the narrower prefixes' metrics."""
        width = outputs[0].shape[1]
        out = self.inner.scores(model, enc, outputs, full)
        loss = 0.0
        for d, w in zip(self.dims, self.weights, strict=True):
            part = out if d == width else self.inner.scores(model, enc, cut(outputs, d), False)
            loss += w * float(part["val_loss"])
        out["val_loss"] = loss
        return out | {k: v for k, v in self.metrics(outputs, enc.target).items() if "@" in k}

    def plot(
        self, report: Path, split: str, scores: dict[str, Any], outputs: list[np.ndarray],
        enc: Encoded,
    ) -> None:  # fmt: skip
        self.inner.plot(report, split, scores, outputs, enc)


def cut(outputs: list[np.ndarray], dims: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(o[:, :dims]) for o in outputs]
