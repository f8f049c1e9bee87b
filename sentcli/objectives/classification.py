"""Labelled texts: a head on the sentence vector (linear, or an MLP with --head-hidden),
trained by cross-entropy; scored by accuracy, macro-F1, per-class scores and the confusion
matrix."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from sentcli.config import TaskConfig, TrainConfig
from sentcli.data.batching import column_array, encode_rows
from sentcli.data.pairs import Shape
from sentcli.data.tasks import load_task
from sentcli.dist import Dist
from sentcli.metrics import classification_metrics, plot_confusion
from sentcli.model import MultiTaskModel
from sentcli.objectives.base import Batch, Encoded, Splits, VectorsFn

if TYPE_CHECKING:
    from datasets import Dataset


def scores(logits: np.ndarray, y: np.ndarray, label_names: list[str], full: bool) -> dict[str, Any]:
    """Validation loss plus accuracy and macro-F1 (and, with `full`, the per-class detail)."""
    t = torch.from_numpy(logits)
    val_loss = float(F.cross_entropy(t, torch.from_numpy(y)))
    metrics = classification_metrics(y, logits.argmax(axis=1), label_names)
    if not full:
        metrics = {k: metrics[k] for k in ("accuracy", "macro_f1")}
    return {"val_loss": val_loss, **metrics}


class Classification:
    outputs: Literal["logits", "vectors"] = "logits"
    views = 1
    scorable = False  # its gold standard is the head's labels: only its own run scores it
    headline: str | None = "accuracy"

    def __init__(self, spec: TaskConfig, train: TrainConfig, ranks: Dist) -> None:
        self.spec, self.train = spec, train

    def head(self, width: int) -> int | None:
        return len(self.spec.label_names)

    def load(
        self, shape: Shape, splits: dict[str, Dataset], names: list[str] | None, resume: bool
    ) -> tuple[TaskConfig, Splits]:
        s, cfg = self.spec, self.train
        td = load_task(
            s.name, s.source, s.text_column, s.label_column, cfg.val_fraction, cfg.seed,
            s.label_names if resume else None, (splits, names),
        )  # fmt: skip
        return replace(s, label_names=td.label_names), {
            "train": td.train, "validation": td.validation,
        } | ({"test": td.test} if td.test is not None else {})  # fmt: skip

    def encode(self, ds: Dataset, tok: Tokenizer, block: int, targets: VectorsFn | None) -> Encoded:
        return Encoded([encode_rows(tok, ds, block)], column_array(ds, "label", np.int64))

    def loss(self, model: MultiTaskModel, batch: Batch) -> torch.Tensor:
        assert batch.target is not None
        loss: torch.Tensor = model(batch.ids, batch.mask, batch.task, batch.target, batch.padded)[1]
        return loss

    def metrics(self, outputs: list[np.ndarray], target: np.ndarray | None) -> dict[str, Any]:
        assert target is not None
        return classification_metrics(target, outputs[0].argmax(axis=1), self.spec.label_names)

    def scores(
        self, model: MultiTaskModel, enc: Encoded, outputs: list[np.ndarray], full: bool
    ) -> dict[str, Any]:
        assert enc.target is not None
        return scores(outputs[0], enc.target, self.spec.label_names, full)

    def plot(
        self, report: Path, split: str, scores: dict[str, Any], outputs: list[np.ndarray],
        enc: Encoded,
    ) -> None:  # fmt: skip
        name = self.spec.name
        title = f"{name} ({split}, accuracy {scores['accuracy']:.3f})"
        plot_confusion(
            report / f"confusion_{name}.png", scores["confusion"], self.spec.label_names, title
        )
