"""The task kinds, one module each behind `Objective` (base.py), and OBJECTIVES: the one
table from a task's kind to its objective. What a task's kind is (from its source's columns
and the flags) is decided in data/pairs.py; everything after that asks the objective."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from sentcli.config import TaskConfig, TaskKind, TrainConfig
from sentcli.dist import Dist
from sentcli.objectives.base import Batch, Encoded, Objective, VectorObjective, VectorsFn
from sentcli.objectives.classification import Classification
from sentcli.objectives.distill import Distill
from sentcli.objectives.matryoshka import Matryoshka
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
    tasks were all labelled), with the run's training settings and processes; a vector
    task of a run with Matryoshka widths trains every prefix (matryoshka.py)."""
    make = OBJECTIVES[spec.kind or TaskKind.classification]
    train, ranks = train or TrainConfig(), ranks or Dist()
    inner = make(spec, train, ranks)
    if train.matryoshka_dims and inner.outputs == "vectors":  # every vector kind has a vector_loss
        vectors = cast(VectorObjective, inner)
        return Matryoshka(vectors, train.matryoshka_dims, train.matryoshka_weights, ranks)
    return inner


def heads(tasks: list[TaskConfig], width: int) -> dict[str, int]:
    """The model's heads and their sizes: the labelled tasks' first, then the others (a
    distillation task's projection), each in task order. Every run has had this order:
    its parameters, and so its saved optimizer state, follow it."""
    kinds = [(spec, objective(spec)) for spec in tasks]
    ordered = [k for k in kinds if k[1].outputs == "logits"]
    ordered += [k for k in kinds if k[1].outputs != "logits"]
    return {s.name: size for s, o in ordered if (size := o.head(width)) is not None}


def labels(tasks: list[TaskConfig]) -> dict[str, list[str]]:
    """The tasks whose head gives labels (predict, export), and their label names."""
    return {t.name: list(t.label_names) for t in tasks if objective(t).outputs == "logits"}
