"""Scores and their rendering at sizes a careless input can reach: many classes."""

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

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


def test_classification_metrics_against_counts_by_hand() -> None:
    """4 classes, 10 texts: accuracy, each class's precision/recall/F1/support and macro-F1
    from the confusion counts written out here (a class never predicted scores 0)."""
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    p = np.array([0, 1, 0, 1, 1, 2, 0, 2, 1, 1])
    m = classification_metrics(y, p, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["confusion"] == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 1, 2, 0], [0, 1, 0, 0]]
    by_hand = {  # name: (precision, recall, support)
        "a": (2 / 3, 2 / 3, 3), "b": (2 / 5, 1.0, 2), "c": (1.0, 0.5, 4), "d": (0.0, 0.0, 1)
    }  # fmt: skip
    f1s = []
    for name, (pr, rc, n) in by_hand.items():
        f1 = 2 * pr * rc / (pr + rc) if pr + rc else 0.0
        f1s.append(f1)
        got = m["per_class"][name]
        assert got == {"precision": pytest.approx(pr), "recall": pytest.approx(rc),
                       "f1": pytest.approx(f1), "support": n}  # fmt: skip
    assert m["macro_f1"] == pytest.approx(sum(f1s) / 4)
    assert m["label_names"] == ["a", "b", "c", "d"]


def test_history_throughput_and_gradient_summary_read_the_log() -> None:
    from sentcli.metrics import grad_summary, history_of, throughput

    records = [
        {"kind": "eval", "step": 0, "epoch": -1, "metrics": {"t/val_loss": 2.0}},
        {"kind": "train", "step": 1, "tokens_per_s": 30.0, "group_norms": {"a": 3.0, "b": 1.0}},
        {"kind": "warning", "step": 1, "message": "x"},
        {"kind": "train", "step": 2, "tokens_per_s": 10.0, "group_norms": {"a": 1.0}},
        {"kind": "train", "step": 3, "tokens_per_s": 20.0, "group_norms": {"a": 2.0, "b": 5.0}},
        {"kind": "eval", "step": 3, "epoch": 0, "metrics": {"t/val_loss": 1.5, "t/acc": 0.5}},
    ]
    assert history_of(records) == [
        {"step": 0, "epoch": -1, "t/val_loss": 2.0},
        {"step": 3, "epoch": 0, "t/val_loss": 1.5, "t/acc": 0.5},
    ]
    speed = throughput(records, 100.0, torch.device("cpu"))
    assert speed == {"tokens_per_s": 20.0, "flops_per_token": 100.0, "model_flops_per_s": 2000.0}
    assert throughput(records[:1], 100.0, torch.device("cpu")) == {}
    # two windows: the upper of the two middle ones
    assert throughput(records[:2] + records[3:4], 1.0, torch.device("cpu"))["tokens_per_s"] == 30.0
    # (group, first, last, min, max) over the logged steps, in the order groups appeared
    assert grad_summary(records) == [("a", 3.0, 2.0, 1.0, 3.0), ("b", 1.0, 5.0, 1.0, 5.0)]


def test_grad_warnings_boundaries() -> None:
    # at the thresholds themselves: no warning; past them, one each, in the groups' order
    assert grad_warnings(1, {"a": 1e3, "b": 1e-7}, 1e3) == []
    got = grad_warnings(4, {"a": 1e3 + 1, "b": 9e-8, "c": float("inf")}, 1e3)
    assert got == [
        "step 4: gradient norm of a is 1e+03 > 1000 (exploding)",
        "step 4: gradient norm of b is 9e-08 < 1e-07 (vanishing)",
        "step 4: gradient norm of c is inf (non-finite)",
    ]
    assert grad_warnings(2, {"a": 0.5}, 0.1, vanishing=0.6) == [
        "step 2: gradient norm of a is 0.5 > 0.1 (exploding)"
    ]


def test_a_class_in_neither_truth_nor_predictions_keeps_its_row_at_zero() -> None:
    m = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), ["a", "b", "c"])
    assert m["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    f1_a, f1_b = 2 * 0.5 * 1 / 1.5, 2 * 1 * 0.5 / 1.5
    assert m["macro_f1"] == pytest.approx((f1_a + f1_b + 0.0) / 3)


def test_curves_show_each_task_and_each_group_mean_and_max() -> None:
    """losses.png draws one train curve per task (not the mixed loss) beside each validation
    loss; grad_norms.png each group's window mean and max (the mean again for records
    written before the max was kept)."""
    from sentcli.metrics import grad_series, loss_curves

    a_norms = {"group_norms": {"head.a": 0.5, "head.b": 0.2}}
    a_norms["group_norms_max"] = {"head.a": 0.9, "head.b": 0.2}
    records = [
        {"kind": "eval", "step": 0, "epoch": -1,
         "metrics": {"a/val_loss": 2.0, "a/train_loss": None}},
        {"kind": "train", "step": 2, "loss": 1.5, "task_losses": {"a": 1.9, "b": 1.1}, **a_norms},
        {"kind": "train", "step": 4, "loss": 1.2, "task_losses": {"a": 1.6, "b": 0.8},
         "group_norms": {"head.a": 0.4}},
        {"kind": "eval", "step": 4, "epoch": 0,
         "metrics": {"a/val_loss": 1.7, "a/train_loss": 1.75}},
        {"kind": "train", "step": 5, "loss": 1.0},  # a log without task losses
        {"kind": "train", "step": 6, "loss": 0.7, "task_losses": {"b": 0.7}},  # a ran out
    ]  # fmt: skip
    curves = loss_curves(records)
    assert curves["b train"] == [(2, 1.1), (4, 0.8), (6, 0.7)]
    assert curves["a train"][:2] == [(2, 1.9), (4, 1.6)]  # then a gap: no steps of a
    assert curves["a train"][2][0] == 6 and math.isnan(curves["a train"][2][1])
    assert curves["a val_loss"] == [(0, 2.0), (4, 1.7)]
    assert "train" not in curves and "a train_loss" not in curves
    series = grad_series(records)
    assert series["head.a"] == ([(2, 0.5), (4, 0.4)], [(2, 0.9), (4, 0.4)])
    assert series["head.b"] == ([(2, 0.2)], [(2, 0.2)])
    one_task = [
        {**r, "task_losses": {"a": r["loss"]}} if r["kind"] == "train" else r for r in records
    ]
    single = loss_curves(one_task)  # one task: the train loss, and its per-evaluation mean
    assert single["train"] == [(2, 1.5), (4, 1.2), (5, 1.0), (6, 0.7)]
    assert single["a train_loss"] == [(4, 1.75)]
    language_model = loss_curves([r for r in records if "task_losses" not in r])
    assert language_model["train"] == [(5, 1.0)]


def test_best_by_metric_takes_each_tasks_headline_metric() -> None:
    """--best-by metric: minus the mean of each task's headline metric (accuracy, Spearman,
    MRR, cosine), None where a task has none; --best-by val-loss: the mean validation loss;
    the best evaluation is the earliest lowest score, never the one before training."""
    from sentcli.metrics import (
        HEADLINE,
        best_eval,
        headlines,
        history_of,
        score_curves,
        selection_score,
    )
    from sentcli.objectives import classification, distill, pairs, scored, simcse

    m = {"a/val_loss": 1.0, "a/accuracy": 0.8, "b/val_loss": 3.0, "b/spearman": 0.6,
         "b/spearman@64": 0.1, "a/train_loss": 0.2}  # fmt: skip
    assert selection_score(m, "metric") == pytest.approx(-0.7)
    assert selection_score(m) == selection_score(m, "val-loss") == 2.0
    lm = {"val_loss": 0.5, "val_ppl": 1.6}
    assert selection_score(lm, "metric") is None and selection_score(lm) == 0.5
    no_metric = {"a/val_loss": 1.0, "a/accuracy": 0.8, "c/val_loss": 0.1}  # c: SimCSE
    assert selection_score(no_metric, "metric") is None and headlines(no_metric)["c"] is None
    assert selection_score({"a/accuracy": float("nan")}, "metric") is None
    assert headlines({"a/accuracy": None, "a/val_loss": 1.0}) == {"a": None}  # not measured

    def ev(step: int, epoch: int, loss: float, acc: float) -> dict[str, Any]:
        return {"kind": "eval", "step": step, "epoch": epoch,
                "metrics": {"a/val_loss": loss, "a/accuracy": acc}}  # fmt: skip

    records = [ev(0, -1, 0.1, 0.99), ev(10, 0, 0.5, 0.7), ev(20, 0, 0.4, 0.6), ev(30, 0, 0.9, 0.9)]
    records += [ev(40, 1, 0.4, 0.9)]
    history = history_of(records)
    assert best_eval(history) == (20, 0.4)  # the epoch -1 row is not a candidate
    assert best_eval(history, "metric") == (30, -0.9)  # the earliest of equals
    assert score_curves(records) == {  # the metric panel: every evaluation, the first too
        "a accuracy": [(0, 0.99), (10, 0.7), (20, 0.6), (30, 0.9), (40, 0.9)]
    }
    kinds = [classification.Classification, distill.Distill, pairs.Pairs, scored.Scored]
    assert all(k.headline in HEADLINE for k in kinds) and simcse.SimCSE.headline is None


def test_the_similarity_heatmap_scale_spans_the_off_diagonal_values(tmp_path: Path) -> None:
    from sentcli.metrics import matrix_range, plot_matrix

    m = np.array([[1.0, 0.9, 0.6], [0.9, 1.0, 0.7], [0.6, 0.7, 1.0]])
    assert matrix_range(m) == (0.6, 0.9)  # the diagonal's 1.0 does not flatten the rest
    assert matrix_range(np.ones((2, 2))) == (0.99, 1.01)
    assert matrix_range(np.ones((1, 1))) == (0.99, 1.01)  # one text: its own cosine
    assert matrix_range(np.zeros((0, 0))) == (0.0, 1.0)  # no texts: a scale all the same
    texts = ["a " * 80, "short", "x"]  # a long text is listed whole, wrapped, below the grid
    plot_matrix(tmp_path / "s.png", texts, m)
    assert (tmp_path / "s.png").stat().st_size > 10_000
