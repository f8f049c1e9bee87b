"""Tasks: labelled texts (label names, ids, checks), unlabelled texts for tokenizers and
pretraining, and the `NAME=SOURCE` task spec."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from sentcli.config import check_task_name
from sentcli.data.sources import (
    LABEL_NAMES,
    TEXT_NAMES,
    check_texts,
    datasets_lib,
    first_row,
    pick_column,
    read_splits,
)
from sentcli.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset


@dataclass
class TaskData:
    """A labelled task: splits with columns `text` (str) and `label` (int), and label names."""

    name: str
    source: str
    train: Dataset
    validation: Dataset
    test: Dataset | None
    label_names: list[str]


MAX_CLASSES = 10_000
"""The most classes integer labels may imply without a labels.txt (a stray 1,000,000,000
would otherwise make a name per integer)."""


def _label_ids(
    ds: Dataset, text_column: str, column: str, names: list[str] | None, where: str
) -> tuple[Dataset, list[str]]:
    """Columns `text` and `label` (int ids) from `ds`; returns the dataset and label names."""
    col = ds.data.column(column)
    if col.null_count:
        row = first_row(pc.is_null(col))
        raise DataError(f"{where}: row {row} has no label in column {column!r}; fill or drop it")
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int64())
    if pa.types.is_integer(col.type):
        if names is None:
            top = int(pc.max(col).as_py())
            if top >= MAX_CLASSES:
                row = first_row(pc.equal(col, top))
                raise DataError(
                    f"{where}: row {row} has label {top}: integer labels are class ids "
                    f"0..K-1 with K at most {MAX_CLASSES:,} unless labels.txt names the "
                    "classes; fix the row or write a labels.txt"
                )
            names = [str(i) for i in range(top + 1)]
        bad = pc.or_(pc.less(col, 0), pc.greater_equal(col, len(names)))
        if pc.any(bad).as_py():
            row = first_row(bad)
            value = col[row - 1].as_py()
            raise DataError(
                f"{where}: row {row} has label {value}, outside 0..{len(names) - 1} "
                f"({len(names)} label names); fix the row or the labels.txt"
            )
        ids = col
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        values = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
        blank = pc.equal(values, "")
        if pc.any(blank).as_py():
            row = first_row(blank)
            raise DataError(
                f"{where}: row {row} has no label in column {column!r}; fill or drop it"
            )
        if names is None:
            names = sorted(pc.unique(values).to_pylist())
        ids = pc.index_in(values, value_set=pa.array(names, pa.string()))
        if ids.null_count:
            row = first_row(pc.is_null(ids))
            raise DataError(
                f"{where}: row {row} has label {values[row - 1].as_py()!r}, which is not one of "
                f"{', '.join(names)}; fix the row or add the name to labels.txt"
            )
    else:
        raise DataError(
            f"{where}: label column {column!r} holds {col.type}, not integers or strings "
            "(numbers and strings mixed, or floats?); make every label an integer id or every "
            "label a name, or pass --label-column to pick another column"
        )
    table = pa.table({"text": ds.data.column(text_column), "label": pc.cast(ids, pa.int64())})
    # An explicit fingerprint: otherwise `datasets` pickles the whole table to hash it (slow
    # on big data, and it fails under some dill/pyarrow versions).
    key = f"{ds._fingerprint}|{text_column}|{column}|{names}"
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
    return datasets_lib().Dataset(table, fingerprint=fingerprint), names


def _labelled(
    ds: Dataset,
    text_column: str | None,
    label_column: str | None,
    names: list[str] | None,
    where: str,
) -> tuple[Dataset, list[str]]:
    """Find and check the text and label columns of one split; map its labels to ids."""
    tcol = pick_column(ds.column_names, text_column, TEXT_NAMES, "text", where)
    lcol = pick_column(ds.column_names, label_column, LABEL_NAMES, "label", where)
    check_texts(ds, tcol, where)
    return _label_ids(ds, tcol, lcol, names, where)


def load_task(
    name: str,
    source: str,
    text_column: str | None = None,
    label_column: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 1337,
    label_names: list[str] | None = None,
    read: tuple[dict[str, Dataset], list[str] | None] | None = None,
) -> TaskData:
    """Load a labelled task; every problem is a `DataError` naming the file, row and fix.
    `read`: the source's splits and labels.txt names, when the caller has read them."""
    splits, names = read or read_splits(source)
    names = label_names or names
    out: dict[str, Dataset] = {}
    for split, ds in splits.items():
        out[split], names = _labelled(ds, text_column, label_column, names, f"{source} ({split})")
    assert names is not None
    if len(names) < 2:
        raise DataError(f"{source}: only one label ({names[0]}); a task needs at least two")
    validation = out.get("validation")
    train = out["train"]
    if validation is None:
        if len(train) < 2:
            raise DataError(f"{source}: too few rows ({len(train)}) to hold out a validation split")
        parts = train.train_test_split(test_size=val_fraction, seed=seed)
        train, validation = parts["train"], parts["test"]
    return TaskData(name, source, train, validation, out.get("test"), names)


def load_eval_split(
    name: str,
    source: str,
    text_column: str | None,
    label_column: str | None,
    label_names: list[str],
) -> tuple[str, Dataset]:
    """The rows to evaluate a trained task on: the test split, else validation, else all of
    train (a plain file), with labels mapped to the model's label names."""
    splits, names = read_splits(source)
    if names is not None and names != label_names:
        raise DataError(
            f"{source}: labels.txt ({', '.join(names)}) differs from the model's labels for "
            f"task {name} ({', '.join(label_names)}); evaluate with data of the same labels"
        )
    split = next(s for s in ("test", "validation", "train") if s in splits)
    where = f"{source} ({split})"
    return split, _labelled(splits[split], text_column, label_column, label_names, where)[0]


def load_texts(sources: list[str], text_column: str | None = None) -> list[tuple[str, Dataset]]:
    """Unlabelled texts for tokenizers and pretraining: (split, Dataset with column `text`).

    A folder's test split is left out, so pretraining never sees the texts it is judged on.
    """
    out = []
    for source in sources:
        splits, _ = read_splits(source)
        for split, ds in splits.items():
            if split == "test":
                continue
            where = f"{source} ({split})"
            col = pick_column(ds.column_names, text_column, TEXT_NAMES, "text", where)
            check_texts(ds, col, where)
            ds = ds.select_columns([col])
            out.append((split, ds if col == "text" else ds.rename_column(col, "text")))
    return out


def split_texts(
    sources: list[str], text_column: str | None, val_fraction: float, seed: int
) -> tuple[list[Dataset], list[Dataset]]:
    """Train and validation texts: the sources' own validation splits, else a seeded share
    of every train split."""
    parts = load_texts(sources, text_column)
    train = [ds for split, ds in parts if split == "train"]
    val = [ds for split, ds in parts if split == "validation"]
    if val:
        return train, val
    if sum(len(ds) for ds in train) < 2:
        raise DataError(f"{', '.join(sources)}: too few texts to pretrain on")
    splits = [ds.train_test_split(test_size=val_fraction, seed=seed) for ds in train]
    return [s["train"] for s in splits], [s["test"] for s in splits]


def parse_task_spec(spec: str) -> tuple[str, str]:
    """`NAME=SOURCE` → (name, source)."""
    name, sep, source = spec.partition("=")
    if not sep or not name.strip() or not source.strip():
        raise DataError(f"task {spec!r} is not NAME=SOURCE; write e.g. --task topic=data/ag_news")
    check_task_name(name.strip())
    return name.strip(), source.strip()


def cut_train(td: TaskData, n: int, seed: int) -> None:
    if n and len(td.train) > n:
        td.train = td.train.shuffle(seed=seed).select(range(n))
