"""A training run's tasks, loaded and tokenized: each task's kind, columns and label names
resolved from its source (or, on --resume, from the run), its splits cut
(--max-samples-per-task, --balance downsample) and encoded once for every epoch."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from sentcli import dist
from sentcli.config import Balance, RunConfig, TaskConfig, TaskKind, TrainConfig
from sentcli.data.pairs import Shape, detect, shape_of
from sentcli.data.sources import read_splits
from sentcli.errors import ConfigError
from sentcli.objectives import Encoded, VectorsFn, heads, objective
from sentcli.training.distill import teacher_dim, teacher_vectors

if TYPE_CHECKING:
    from datasets import Dataset

Key = tuple[str, str]
"""(task, split)."""


@dataclass
class TaskSet:
    """The tasks (their configs with kind, columns and label names resolved) and their
    splits, tokenized."""

    specs: dict[str, TaskConfig]
    data: dict[Key, Encoded]

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def heads(self, width: int) -> dict[str, int]:
        """The model's heads: each task whose objective has one (a classification task's
        labels, a distillation task's projection onto a teacher of another width)."""
        return heads(list(self.specs.values()), width)

    def side_lengths(self, task: str) -> np.ndarray:
        """Tokens of each side of each training row [sides, rows]: their sum is what a row
        trains on, their max what a batch pads it to."""
        return np.array([[len(x) for x in side] for side in self.data[(task, "train")].sides])

    def test_split(self, task: str) -> str:
        return "test" if (task, "test") in self.data else "validation"


def _cut(ds: Dataset, n: int, seed: int) -> Dataset:
    return ds.shuffle(seed=seed).select(range(n)) if n and len(ds) > n else ds


def _load_one(
    spec: TaskConfig, cfg: TrainConfig, resume: bool
) -> tuple[TaskConfig, dict[str, Dataset]]:
    """One task's checked splits (classification: text, label; pairs: a, b[, c][, score];
    plain text: text) and its config with the kind, columns and label names resolved."""
    if resume and spec.kind is not None and spec.kind != TaskKind.classification:
        saved = TaskKind.text if spec.kind == TaskKind.distill else spec.kind
        shape = Shape(saved, spec.pair_columns, spec.score_column, spec.text_column)
        splits, names = read_splits(spec.source)
        if shape.kind == TaskKind.text:
            shape.text_column = detect(splits["train"].column_names, spec, spec.source).text_column
    else:
        shape, splits, names = shape_of(spec)
    # plain text distills from --teacher when there is one (SimCSE without)
    distill = shape.kind == TaskKind.text and cfg.teacher is not None
    kind = TaskKind.distill if distill else shape.kind
    width = teacher_dim(Path(cfg.teacher)) if distill and cfg.teacher else 0
    return objective(replace(spec, kind=kind, teacher_dim=width), cfg).load(
        shape, splits, names, resume
    )


def load_tasks(
    specs: list[TaskConfig],
    config: RunConfig,
    tok: Tokenizer,
    resume: bool,
    ranks: dist.Dist | None = None,
) -> TaskSet:
    """Load, check, cut (--max-samples-per-task, --balance downsample) and tokenize every
    task; a resumed run keeps its tasks' kinds, columns and label names."""
    cfg = config.train
    loaded = {s.name: _load_one(s, cfg, resume) for s in specs}
    for _, splits in loaded.values():
        splits["train"] = _cut(splits["train"], cfg.max_samples_per_task, cfg.seed)
    if cfg.balance == Balance.downsample:
        smallest = min(len(splits["train"]) for _, splits in loaded.values())
        for _, splits in loaded.values():
            splits["train"] = _cut(splits["train"], smallest, cfg.seed)
    block = config.model.block_size
    targets: VectorsFn | None = None
    if cfg.teacher is not None:
        if all(spec.kind != TaskKind.distill for spec, _ in loaded.values()):
            raise ConfigError(
                "--teacher RUN distills on plain-text tasks and this run has none; add --task "
                "NAME=TEXTS (a line file or an unlabelled folder), or drop --teacher"
            )
        targets = partial(
            teacher_vectors, Path(cfg.teacher), batch_size=cfg.batch_size * 2,
            device=cfg.device, ranks=ranks or dist.Dist(),
        )  # fmt: skip
    data = {}
    for t, (spec, splits) in loaded.items():
        kind = objective(spec, cfg, ranks)
        for split, ds in splits.items():
            data[(t, split)] = kind.encode(ds, tok, block, targets)
    return TaskSet({t: spec for t, (spec, _) in loaded.items()}, data)
