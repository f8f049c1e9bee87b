"""Similarity tasks as data: what a source's columns make of it, and the refusals."""

import json
from pathlib import Path

import pytest

from sentcli.config import TaskConfig, TaskKind
from sentcli.data.pairs import detect, load_pairs, shape_of
from sentcli.errors import DataError

from helpers import DATA, write_csv

STS = ("sentence1", "sentence2", "score")


def spec(source: Path | str, **kw: object) -> TaskConfig:
    return TaskConfig("t", str(source), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("columns", "kind", "pair", "score"),
    [
        (["sentence1", "sentence2", "score", "genre"], TaskKind.scored, 2, "score"),
        (["text1", "text2", "similarity"], TaskKind.scored, 2, "similarity"),
        (["sentence1", "sentence2"], TaskKind.pairs, 2, None),
        (["anchor", "positive"], TaskKind.pairs, 2, None),
        (["anchor", "positive", "negative", "score"], TaskKind.pairs, 3, None),
        (["text", "label"], TaskKind.classification, 0, None),
        (["text"], TaskKind.text, 0, None),
    ],
)
def test_the_kind_follows_the_columns(
    columns: list[str], kind: TaskKind, pair: int, score: str | None
) -> None:
    shape = detect(columns, spec("x"), "x")
    assert (shape.kind, len(shape.pair_columns), shape.score_column) == (kind, pair, score)


def test_odd_column_names_are_given_with_flags(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "odd.csv",
        [("a cat sits", "a cat is sitting", "9"), ("a man runs", "stocks fell", "1")] * 3,
        ("left", "right", "rating"),
    )
    with pytest.raises(DataError, match="name them: --pair-columns A,B"):
        shape_of(spec(path))
    given = spec(path, pair_columns=["left", "right"], score_column="rating")
    shape, splits, _ = shape_of(given)
    assert shape.kind == TaskKind.scored
    data = load_pairs(given, splits, shape, 0.5, 0)
    assert data.score_range == [1.0, 9.0]  # a 1-10 scale is kept as it is
    assert set(data.train.column_names) == {"a", "b", "score"}
    with pytest.raises(DataError, match="no pair column 'nope'"):
        shape_of(spec(path, pair_columns=["left", "nope"]))


def test_scores_written_as_strings_are_numbers_and_other_strings_are_refused(
    tmp_path: Path,
) -> None:
    rows = [{"sentence1": f"s{i}", "sentence2": f"t{i}", "score": str(i / 10)} for i in range(8)]
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shape, splits, _ = shape_of(spec(good))
    data = load_pairs(spec(good), splits, shape, 0.25, 0)
    assert shape.kind == TaskKind.scored and data.score_range == [0.0, 0.7]  # a 0-1 scale
    rows[5]["score"] = "high"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shape, splits, _ = shape_of(spec(bad))
    with pytest.raises(DataError, match=r"row 6 has score 'high' in column 'score', not a number"):
        load_pairs(spec(bad), splits, shape, 0.25, 0)


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (("text", "score"), [("a", "1"), ("b", "2")], "one text column"),
        (("q", "doc", "score"), [("a", "b", "1")], r"not know as a pair \(q, doc\).*q,doc$"),
        (STS, [("a", " ", "1"), ("b", "c", "2")], "row 1 has an empty text in column 'sentence2'"),
        (STS, [("a", "b", "2"), ("c", "d", "2")], "every train score is 2"),
        (STS, [("a", "b", "1"), ("c", "d", "")], "row 2 has no score"),
    ],
)
def test_bad_pair_data_is_refused_naming_the_row(
    tmp_path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]], message: str
) -> None:
    path = write_csv(tmp_path / "p.csv", rows, header)
    with pytest.raises(DataError, match=message):
        shape, splits, _ = shape_of(spec(path))
        load_pairs(spec(path), splits, shape, 0.5, 0)


def test_the_shipped_sts_sample_is_a_scored_pair_task() -> None:
    shape, splits, _ = shape_of(spec(DATA / "stsb"))
    data = load_pairs(spec(DATA / "stsb"), splits, shape, 0.1, 0)
    assert shape.kind == TaskKind.scored and shape.pair_columns == ["sentence1", "sentence2"]
    assert (len(data.train), len(data.validation), data.score_range) == (2000, 750, [0.0, 5.0])


def test_flags_and_labels_txt_make_a_classification_task_and_ambiguity_is_refused() -> None:
    glue = ["sentence1", "sentence2", "label"]
    assert detect(glue, spec("x"), "x").kind == TaskKind.scored
    assert detect(glue, spec("x", label_column="label"), "x").kind == TaskKind.classification
    assert detect(glue, spec("x"), "x", labels_file=True).kind == TaskKind.classification
    with pytest.raises(DataError, match="pass --score-column label"):
        detect(["query", "document", "label"], spec("x"), "x")


def test_every_split_is_checked_and_unscored_splits_are_refused(tmp_path: Path) -> None:
    rows = [(f"a{i}", f"b{i}", str(i % 5)) for i in range(10)]
    write_csv(tmp_path / "train.csv", rows, STS)
    write_csv(tmp_path / "test.csv", rows, ("sentence1", "other", "score"))
    with pytest.raises(DataError, match=r"\(test\): no pair column 'sentence2'"):
        shape, splits, _ = shape_of(spec(tmp_path))
        load_pairs(spec(tmp_path), splits, shape, 0.2, 0)
    write_csv(tmp_path / "test.csv", [(a, b, "-1") for a, b, _ in rows], STS)
    with pytest.raises(DataError, match=r"\(test\): every score is -1"):
        shape, splits, _ = shape_of(spec(tmp_path))
        load_pairs(spec(tmp_path), splits, shape, 0.2, 0)
