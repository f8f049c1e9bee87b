"""A training run's tasks, loaded and tokenized: each task's kind, columns and label names
resolved from its source (or, on --resume, from the run), its splits cut
(--max-samples-per-task, --balance downsample) and encoded once for every epoch."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from sentcli import dist
from sentcli.config import Balance, RunConfig, TaskConfig, TaskKind, TrainConfig
from sentcli.data.batching import column_array, encode_rows
from sentcli.data.pairs import SIDES, Shape, detect, load_pairs, shape_of
from sentcli.data.sources import read_splits
from sentcli.data.tasks import load_task
from sentcli.training.distill import teacher_dim, teacher_vectors

if TYPE_CHECKING:
    from datasets import Dataset

Key = tuple[str, str]
"""(task, split)."""


@dataclass
class Encoded:
    """One split of a task, tokenized: token ids per side (one side for classification and
    plain text; two or three for pairs) and the target (int labels, float scores or None)."""

    sides: list[list[np.ndarray]]
    target: np.ndarray | None

    def __len__(self) -> int:
        return len(self.sides[0])


@dataclass
class TaskSet:
    """The tasks (their configs with kind, columns and label names resolved) and their
    splits, tokenized."""

    specs: dict[str, TaskConfig]
    data: dict[Key, Encoded]

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def kind(self, task: str) -> TaskKind:
        return self.specs[task].kind or TaskKind.classification  # see TaskConfig.has_labels

    def heads(self, width: int) -> dict[str, int]:
        """The model's heads: classification tasks and their label counts, and distillation
        tasks whose teacher's width differs from the model's `width` (a projection)."""
        out = {
            t: len(c.label_names)
            for t, c in self.specs.items()
            if self.kind(t) == TaskKind.classification
        }
        return out | {
            t: c.teacher_dim
            for t, c in self.specs.items()
            if self.kind(t) == TaskKind.distill and c.teacher_dim != width
        }

    def lengths(self, task: str) -> np.ndarray:
        """Tokens per training row (all its sides)."""
        sides = self.data[(task, "train")].sides
        return np.asarray(np.sum([[len(x) for x in side] for side in sides], axis=0))

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
        kind = TaskKind.text if spec.kind == TaskKind.distill else spec.kind
        shape = Shape(kind, spec.pair_columns, spec.score_column, spec.text_column)
        splits, names = read_splits(spec.source)
        if shape.kind == TaskKind.text:
            shape.text_column = detect(splits["train"].column_names, spec, spec.source).text_column
    else:
        shape, splits, names = shape_of(spec)
    if shape.kind == TaskKind.classification:
        td = load_task(
            spec.name, spec.source, spec.text_column, spec.label_column, cfg.val_fraction,
            cfg.seed, spec.label_names if resume else None, (splits, names),
        )  # fmt: skip
        done = replace(spec, label_names=td.label_names, kind=TaskKind.classification)
        return done, {"train": td.train, "validation": td.validation} | (
            {"test": td.test} if td.test is not None else {}
        )
    pd = load_pairs(spec, splits, shape, cfg.val_fraction, cfg.seed)
    distill = shape.kind == TaskKind.text and cfg.teacher is not None
    done = replace(
        spec, kind=TaskKind.distill if distill else shape.kind, pair_columns=shape.pair_columns,
        score_column=shape.score_column, score_range=pd.score_range,
        teacher_dim=teacher_dim(Path(cfg.teacher)) if distill and cfg.teacher else 0,
    )  # fmt: skip
    return done, {"train": pd.train, "validation": pd.validation} | (
        {"test": pd.test} if pd.test is not None else {}
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
    data = {}
    for t, (spec, splits) in loaded.items():
        for split, ds in splits.items():
            if spec.kind == TaskKind.classification:
                sides = [encode_rows(tok, ds, block)]
                target = column_array(ds, "label", np.int64)
            elif spec.kind == TaskKind.text:
                sides, target = [encode_rows(tok, ds, block)], None
            elif spec.kind == TaskKind.distill:
                assert cfg.teacher is not None
                sides = [encode_rows(tok, ds, block)]
                target = teacher_vectors(
                    Path(cfg.teacher), ds, cfg.batch_size * 2, cfg.device, ranks or dist.Dist()
                )
            else:
                columns = SIDES[: len(spec.pair_columns)]
                sides = [encode_rows(tok, ds, block, c) for c in columns]
                scored = spec.kind == TaskKind.scored
                target = column_array(ds, "score", np.float32) if scored else None
            data[(t, split)] = Encoded(sides, target)
    return TaskSet({t: spec for t, (spec, _) in loaded.items()}, data)
