"""The task kinds, one module each behind `Objective` (base.py), and OBJECTIVES: the one
table from a task's kind to its objective. What a task's kind is (from its source's columns
and the flags) is decided in data/pairs.py; everything after that asks the objective."""

from __future__ import annotations

from collections.abc import Callable

from sentcli.config import TaskConfig, TaskKind, TrainConfig
from sentcli.dist import Dist
from sentcli.objectives.base import Batch, Encoded, Objective, VectorsFn
from sentcli.objectives.classification import Classification
from sentcli.objectives.distill import Distill
from sentcli.objectives.pairs import Pairs
from sentcli.objectives.scored import Scored
from sentcli.objectives.simcse import SimCSE

__all__ = [
    "OBJECTIVES", "Batch", "Encoded", "Objective", "VectorsFn", "heads", "labels", "objective",
]  # fmt: skip

OBJECTIVES: dict[TaskKind, Callable[[TaskConfig, TrainConfig, Dist], Objective]] = {
    TaskKind.classification: Classification,
    TaskKind.scored: Scored,
    TaskKind.pairs: Pairs,
    TaskKind.text: SimCSE,
    TaskKind.distill: Distill,
}


def objective(
    spec: TaskConfig, train: TrainConfig | None = None, ranks: Dist | None = None
) -> Objective:
    """The objective of a task (a run written before similarity tasks has no kind: its
    tasks were all labelled), with the run's training settings and processes."""
    make = OBJECTIVES[spec.kind or TaskKind.classification]
    return make(spec, train or TrainConfig(), ranks or Dist())


def heads(tasks: list[TaskConfig], width: int) -> dict[str, int]:
    """The model's heads, in task order: each task whose objective has one, and its size."""
    out = {}
    for spec in tasks:
        size = objective(spec).head(width)
        if size is not None:
            out[spec.name] = size
    return out


def labels(tasks: list[TaskConfig]) -> dict[str, list[str]]:
    """The tasks whose head gives labels (predict, export), and their label names."""
    return {t.name: list(t.label_names) for t in tasks if objective(t).outputs == "logits"}
