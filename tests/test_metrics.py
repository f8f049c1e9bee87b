"""Scores and their rendering at sizes a careless input can reach: many classes."""

import struct
from pathlib import Path

import numpy as np

from sentcli.cli.render import TABLE_CLASSES, confusion_table
from sentcli.metrics import classification_metrics, grad_warnings, plot_confusion


def png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the IHDR chunk
    return width, height


def test_a_thousand_class_confusion_plot_stays_bounded(tmp_path: Path) -> None:
    n = 1000
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 5, size=(n, n)).tolist()
    path = tmp_path / "confusion.png"
    plot_confusion(path, confusion, [f"c{i}" for i in range(n)], "1,000 classes")
    width, height = png_size(path)
    assert 0 < width <= 17 * 100 and 0 < height <= 16 * 100  # 16 inches at 100 dpi at most


def test_many_class_table_shows_the_largest_classes_and_the_rest_as_other() -> None:
    n = 40
    confusion = [[0] * n for _ in range(n)]
    for i in range(n):
        confusion[i][i] = i + 1  # class 39 is the largest
        confusion[i][0] += 2
    table = confusion_table("topic", confusion, [f"c{i}" for i in range(n)])
    assert len(table.columns) == 1 + TABLE_CLASSES + 1 and table.row_count == TABLE_CLASSES
    assert [c.header for c in table.columns][1] == f"c{n - TABLE_CLASSES}"
    other = list(table.columns[-1].cells)
    assert other[0] == "2 (6%)"  # class 28: 29 right, 2 predicted as c0 (not shown): 2/31
    assert "the 12 largest of 40 classes" in str(table.title)
    small = confusion_table("t", [[3, 1], [0, 4]], ["neg", "pos"])
    assert len(small.columns) == 3 and list(small.columns[1].cells) == ["3 (75%)", "0 (0%)"]


def test_grad_warnings() -> None:
    warnings = grad_warnings(
        7, {"block.0": 1e-9, "head.t": float("nan"), "block.1": 5e3, "x": 1.0}, 1e3
    )
    assert any("block.0" in w and "vanishing" in w for w in warnings)
    assert any("head.t" in w and "non-finite" in w for w in warnings)
    assert any("block.1" in w and "exploding" in w for w in warnings)
    assert len(warnings) == 3


def test_confusion_keeps_its_shape_when_a_class_is_never_predicted() -> None:
    m = classification_metrics(np.array([0, 1, 2]), np.array([0, 0, 0]), ["a", "b", "c"])
    assert np.array(m["confusion"]).shape == (3, 3)
    assert m["per_class"]["c"]["recall"] == 0.0
