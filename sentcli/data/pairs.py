"""Similarity tasks: scored pairs (two texts and a number, STS-style), positive pairs or
triplets (anchor, positive[, hard negative]) and plain text (SimCSE).

What a task is comes from its source's columns, in this order: `--pair-columns` or a known
pair of names (sentence1/sentence2, anchor/positive[/negative], …) make a pair task, scored
when a numeric score column is given or found (score, similarity, label…; not for
anchor/query pairs or triplets); else a label column makes a classification task; else a
lone text column is plain text for SimCSE."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from sentcli.config import TaskConfig, TaskKind
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

PAIR_NAMES = (
    ("anchor", "positive", "negative"),
    ("query", "positive", "negative"),
    ("anchor", "positive"),
    ("query", "positive"),
    ("query", "document"),
    ("sentence1", "sentence2"),
    ("sentence_a", "sentence_b"),
    ("sentence_1", "sentence_2"),
    ("text1", "text2"),
    ("text_a", "text_b"),
    ("question1", "question2"),
)
SCORE_NAMES = ("score", "similarity", "similarity_score", "relatedness_score", "label")
RETRIEVAL_FIRST = ("anchor", "query")  # such pairs are positives, whatever else is there
SIDES = ("a", "b", "c")


@dataclass
class Shape:
    """What a source holds: its kind and, for pairs, the columns to read."""

    kind: TaskKind
    pair_columns: list[str]
    score_column: str | None = None
    text_column: str | None = None


def detect(
    columns: Sequence[str], spec: TaskConfig, where: str, labels_file: bool = False
) -> Shape:
    """The task's shape from a split's columns and the flags in `spec` (see the module)."""
    given = list(spec.pair_columns)
    for col in given:
        pick_column(columns, col, (), "pair", where)
    if given and len(given) not in (2, 3):
        raise DataError(
            f"--pair-columns {','.join(given)}: give two columns (a pair) or three (anchor, "
            "positive, negative)"
        )
    found = next((list(g) for g in PAIR_NAMES if all(c in columns for c in g)), [])
    if not given and (spec.label_column or spec.text_column or labels_file):
        found = []  # the flags or a labels.txt name a classification task
    pair = given or found
    if spec.score_column is not None:
        pick_column(columns, spec.score_column, (), "score", where)
        if len(pair) != 2:
            raise DataError(
                f"{where}: --score-column {spec.score_column} needs two text columns, found "
                f"{len(pair) or 'no'} pair of names; pass --pair-columns A,B"
            )
    if pair:
        score = spec.score_column or next(
            (c for c in SCORE_NAMES if c in columns and c not in pair), None
        )
        retrieval = len(pair) == 3 or (pair[0] in RETRIEVAL_FIRST and not spec.score_column)
        if score is not None and not retrieval:
            return Shape(TaskKind.scored, pair, score)
        if score is not None and len(pair) == 2:
            raise DataError(
                f"{where}: {pair[0]}/{pair[1]} pairs with a {score!r} column: pass --score-column "
                f"{score} to train them as scored pairs, or drop the column for positive pairs"
            )
        return Shape(TaskKind.pairs, pair)
    if spec.label_column is not None or any(c in columns for c in LABEL_NAMES):
        return Shape(TaskKind.classification, [])
    scores = [c for c in SCORE_NAMES if c in columns]
    if scores:
        others = [c for c in columns if c != scores[0]]
        if len(others) >= 2:  # texts under names sentcli does not know
            raise DataError(
                f"{where}: a score column ({scores[0]}) beside columns sentcli does not know "
                f"as a pair ({', '.join(others)}); name the two texts: --pair-columns "
                f"{others[0]},{others[1]}"
            )
        raise DataError(
            f"{where}: a score column ({scores[0]}) but one text column; a scored pair task "
            "needs two text columns: pass --pair-columns A,B"
        )
    if spec.text_column is None and not any(c in columns for c in TEXT_NAMES):
        raise DataError(
            f"{where}: no column sentcli knows by name ({', '.join(columns)}); name them: "
            "--pair-columns A,B (and --score-column) for sentence pairs, --text-column and "
            "--label-column for labelled texts, --text-column for plain text"
        )
    text = pick_column(columns, spec.text_column, TEXT_NAMES, "text", where)
    return Shape(TaskKind.text, [], text_column=text)


@dataclass
class PairData:
    """A similarity task's splits: columns a, b[, c] (texts) and, scored, `score` (float)."""

    name: str
    source: str
    shape: Shape
    train: Dataset
    validation: Dataset
    test: Dataset | None
    score_range: list[float]


def _check_text_column(ds: Dataset, column: str, where: str) -> None:
    check_texts(ds, column, where, "--pair-columns")
    blank = pc.equal(pc.utf8_trim_whitespace(ds.data.column(column)), "")
    if pc.any(blank).as_py():
        raise DataError(
            f"{where}: row {first_row(blank)} has an empty text in column {column!r}; fill "
            "or drop it"
        )


def _scores(ds: Dataset, column: str, where: str) -> pa.ChunkedArray:
    """The score column as float64; numbers written as strings are read as numbers."""
    col = ds.data.column(column)
    if col.null_count:
        row = first_row(pc.is_null(col))
        raise DataError(f"{where}: row {row} has no score in column {column!r}; fill or drop it")
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        for i, value in enumerate(col.to_pylist(), start=1):
            if not value.strip():
                raise DataError(
                    f"{where}: row {i} has no score in column {column!r}; fill or drop it"
                )
            try:
                float(value)
            except ValueError:
                raise DataError(
                    f"{where}: row {i} has score {value!r} in column {column!r}, not a "
                    "number; fix the row or pass --score-column with the numeric column"
                ) from None
        col = pc.cast(pc.utf8_trim_whitespace(col), pa.float64())
    elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise DataError(
            f"{where}: score column {column!r} holds {col.type}, not numbers; pass "
            "--score-column with the numeric column"
        )
    col = pc.cast(col, pa.float64())
    bad = pc.invert(pc.is_finite(col))
    if pc.any(bad).as_py():
        raise DataError(f"{where}: row {first_row(bad)} has a score that is not finite")
    return col


def pair_table(ds: Dataset, shape: Shape, where: str) -> Dataset:
    """Columns a, b[, c] (and score), checked; `text` for plain text (blank lines dropped)."""
    lib = datasets_lib()
    if shape.kind == TaskKind.text:
        assert shape.text_column is not None
        check_texts(ds, shape.text_column, where)
        col = ds.data.column(shape.text_column)
        keep = pc.not_equal(pc.utf8_trim_whitespace(col), "")
        table = pa.table({"text": pc.filter(col, keep)})
    else:
        columns = {}
        for column in shape.pair_columns:  # every split, not only train's
            pick_column(ds.column_names, column, (), "pair", where)
        if shape.score_column is not None:
            pick_column(ds.column_names, shape.score_column, (), "score", where)
        for side, column in zip(SIDES, shape.pair_columns, strict=False):
            _check_text_column(ds, column, where)
            columns[side] = ds.data.column(column)
        if shape.score_column is not None:
            columns["score"] = _scores(ds, shape.score_column, where)
        table = pa.table(columns)
    if len(table) == 0:
        raise DataError(f"{where}: no rows with text; give a file with at least one row")
    key = f"{ds._fingerprint}|{shape}"
    return lib.Dataset(table, fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16])


def load_pairs(
    spec: TaskConfig,
    splits: dict[str, Dataset],
    shape: Shape,
    val_fraction: float,
    seed: int,
) -> PairData:
    """A similarity task's splits, checked; a seeded share of train becomes validation when
    the source has none."""
    out = {s: pair_table(ds, shape, f"{spec.source} ({s})") for s, ds in splits.items()}
    train, validation = out["train"], out.get("validation")
    if validation is None:
        if len(train) < 2:
            raise DataError(
                f"{spec.source}: too few rows ({len(train)}) to hold out a validation split"
            )
        parts = train.train_test_split(test_size=val_fraction, seed=seed)
        train, validation = parts["train"], parts["test"]
    score_range: list[float] = []
    if shape.kind == TaskKind.scored:
        scores = train.data.column("score")
        low, high = pc.min(scores).as_py(), pc.max(scores).as_py()
        if low == high:
            raise DataError(
                f"{spec.source}: every train score is {low:g}; a scored task needs different "
                "scores (or positive pairs: drop the score column)"
            )
        score_range = spec.score_range or [low, high]
        for split, ds in (("validation", validation), ("test", out.get("test"))):
            gold = None if ds is None else ds.data.column("score")
            if gold is not None and pc.min(gold).as_py() == pc.max(gold).as_py():
                raise DataError(
                    f"{spec.source} ({split}): every score is {pc.min(gold).as_py():g}: no "
                    "ranking to score against (an unlabelled test split?); drop the split"
                )
    return PairData(spec.name, spec.source, shape, train, validation, out.get("test"), score_range)


def shape_of(spec: TaskConfig) -> tuple[Shape, dict[str, Dataset], list[str] | None]:
    """Read a task's source and find its shape (from the train split's columns); also the
    splits and the labels.txt names."""
    splits, names = read_splits(spec.source)
    where = f"{spec.source} (train)"
    shape = detect(splits["train"].column_names, spec, where, labels_file=names is not None)
    return shape, splits, names
