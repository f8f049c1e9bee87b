"""Distillation: plain text whose targets are a teacher run's L2-normalised vectors (cached
per corpus, training/distill.py); the student's vector, through a learned projection when
the widths differ, regresses onto them (MSE). Scored by its loss and the mean cosine to the
teacher."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tokenizers import Tokenizer

from sentcli.config import TaskConfig, TaskKind, TrainConfig
from sentcli.data.batching import encode_rows
from sentcli.data.pairs import Shape
from sentcli.dist import Dist
from sentcli.model import MultiTaskModel
from sentcli.objectives.base import Batch, Encoded, Splits, VectorsFn, embed_sides, load_pair_task

if TYPE_CHECKING:
    from datasets import Dataset


def distill_loss(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the student's and the teacher's L2-normalised vectors; a student cut to
    its first d dimensions (Matryoshka) matches the teacher's first d, re-normalised."""
    d = student.shape[-1]
    teacher = (
        target.float() if d == target.shape[-1] else F.normalize(target[:, :d].float(), dim=-1)
    )
    return F.mse_loss(F.normalize(student.float(), dim=-1), teacher)


class Distill:
    outputs: Literal["logits", "vectors"] = "vectors"
    views = 1
    scorable = False
    headline: str | None = "cosine"

    def __init__(self, spec: TaskConfig, train: TrainConfig, ranks: Dist) -> None:
        self.train = train
        self.spec, self.ranks = spec, ranks

    def load(
        self, shape: Shape, splits: dict[str, Dataset], names: list[str] | None, resume: bool
    ) -> tuple[TaskConfig, Splits]:
        return load_pair_task(self.spec, shape, splits, self.train)

    def head(self, width: int) -> int | None:
        """A projection onto the teacher's width when it differs from the model's."""
        dim = self.spec.teacher_dim
        return dim if dim and dim != width else None

    def encode(self, ds: Dataset, tok: Tokenizer, block: int, targets: VectorsFn | None) -> Encoded:
        assert targets is not None
        return Encoded([encode_rows(tok, ds, block)], targets(ds))

    def _project(self, model: MultiTaskModel) -> nn.Module:
        heads = model.heads  # nn.ModuleDict has no .get
        return heads[self.spec.name] if self.spec.name in heads else nn.Identity()

    def vectors(self, model: MultiTaskModel, batch: Batch) -> list[torch.Tensor]:
        return [self._project(model)(embed_sides(model, batch)[0])]

    def vector_loss(
        self, sides: list[torch.Tensor], target: torch.Tensor | None, n: int, ranks: Dist
    ) -> torch.Tensor:
        assert target is not None
        return distill_loss(sides[0], target)

    def loss(self, model: MultiTaskModel, batch: Batch) -> torch.Tensor:
        return self.vector_loss(self.vectors(model, batch), batch.target, batch.n, self.ranks)

    def metrics(self, outputs: list[np.ndarray], target: np.ndarray | None) -> dict[str, Any]:
        return {}

    def scores(
        self, model: MultiTaskModel, enc: Encoded, outputs: list[np.ndarray], full: bool
    ) -> dict[str, Any]:
        """The loss and the mean cosine of the (projected) vectors to the teacher's."""
        assert enc.target is not None
        device = next(model.parameters()).device
        with torch.no_grad():
            v = self._project(model)(torch.from_numpy(outputs[0]).to(device)).float().cpu()
        teacher = torch.from_numpy(np.array(enc.target, dtype=np.float32))  # off the memmap
        if v.shape[1] < teacher.shape[1]:  # a Matryoshka prefix (the model's own width)
            teacher = F.normalize(teacher[:, : v.shape[1]], dim=-1)
        out: dict[str, Any] = {
            "val_loss": float(distill_loss(v, teacher)),
            "cosine": float((F.normalize(v, dim=-1) * teacher).sum(dim=1).mean()),
        }
        return out | ({"kind": str(TaskKind.distill), "pairs": len(enc)} if full else {})

    def plot(
        self, report: Path, split: str, scores: dict[str, Any], outputs: list[np.ndarray],
        enc: Encoded,
    ) -> None:  # fmt: skip
        pass  # the loss and the mean cosine say it
