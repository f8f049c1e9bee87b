"""The training objectives and losses, each against an independent computation: CoSENT,
InfoNCE, the rank metrics, the weighted multi-task loss and the task schedules."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sentcli.config import ModelConfig, TaskConfig
from sentcli.data.batching import collate
from sentcli.dist import Dist
from sentcli.model import MultiTaskModel
from sentcli.objectives import Batch, objective
from sentcli.objectives.pairs import info_nce, retrieval
from sentcli.objectives.scored import cosent, spearman
from sentcli.training.multitask import plan_steps, weighted_loss


def batches(n: int, tag: int) -> list[np.ndarray]:
    return [np.array([tag, i]) for i in range(n)]


def test_cosent_matches_the_pairwise_sum() -> None:
    torch.manual_seed(0)
    cos, scores = torch.rand(6) * 2 - 1, torch.tensor([0.0, 1, 1, 2.5, 4, 5])
    terms = [
        math.exp(20 * (cos[j] - cos[i]).item())
        for i in range(6)
        for j in range(6)
        if scores[i] > scores[j]
    ]
    assert cosent(cos, scores, 20.0).item() == pytest.approx(math.log1p(sum(terms)), rel=1e-5)
    # only the order of the scores matters: a 0-1 and a 1-10 scale give the same loss
    assert cosent(cos, scores / 5, 20.0).item() == pytest.approx(
        cosent(cos, 1 + scores * 9 / 5, 20.0).item()
    )


def test_info_nce_is_cross_entropy_over_positives_and_hard_negatives() -> None:
    torch.manual_seed(0)
    a, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    sims = 20 * F.normalize(a, dim=-1) @ F.normalize(torch.cat([p, n]), dim=-1).T
    expected = F.cross_entropy(sims, torch.arange(4))
    assert info_nce(a, [p, n], 20.0, 4, Dist()).item() == pytest.approx(expected.item(), rel=1e-5)


def test_spearman_and_retrieval_metrics() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x, y = rng.random(50), np.round(rng.random(50) * 5)  # ties in y
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    anchors = np.eye(4)
    positives = np.eye(4)[[0, 1, 3, 2]]  # anchors 2 and 3: their positive ties with 3 others
    m = retrieval(anchors, positives, chunk=3)
    assert m == {"recall@1": 0.5, "mrr": pytest.approx((1 + 1 + 0.25 + 0.25) / 4)}  # ties: last
    collapsed = retrieval(np.ones((4, 2)), np.ones((4, 2)))  # every candidate ties
    assert collapsed == {"recall@1": 0.0, "mrr": pytest.approx(0.25)}


def test_round_robin_takes_turns_and_uses_every_batch_once() -> None:
    steps = plan_steps(
        {"a": batches(3, 0), "b": batches(1, 1)}, "round-robin", np.random.default_rng(0)
    )
    assert [[t for t, _ in s] for s in steps] == [["a"], ["b"], ["a"], ["a"]]


def test_joint_takes_one_batch_of_every_task_left() -> None:
    steps = plan_steps({"a": batches(2, 0), "b": batches(1, 1)}, "joint", np.random.default_rng(0))
    assert [[t for t, _ in s] for s in steps] == [["a", "b"], ["a"]]


@pytest.mark.parametrize("temperature,expected", [(1.0, 3.0), (1e9, 1.0)])
def test_proportional_draws_match_the_expected_ratio(temperature: float, expected: float) -> None:
    plan = {"a": batches(3000, 0), "b": batches(1000, 1)}
    steps = plan_steps(plan, "proportional", np.random.default_rng(1), temperature)
    assert len(steps) == 4000
    first = [s[0][0] for s in steps[:1000]]  # before either task can run out
    ratio = first.count("a") / first.count("b")
    assert ratio == pytest.approx(expected, rel=0.15)


def test_joint_loss_is_the_weighted_sum(tiny_config: ModelConfig) -> None:
    model = MultiTaskModel(tiny_config, {"topic": 4, "sentiment": 2})
    ids, mask = collate([np.arange(5, 12), np.arange(5, 9)])
    step = [
        Batch(t, ids, mask, 2, 2, y, objective(TaskConfig(t, "x", label_names=["a"] * k)))
        for t, y, k in (("topic", torch.tensor([0, 3]), 4), ("sentiment", torch.tensor([1, 0]), 2))
    ]
    total, losses = weighted_loss(model, step, {"topic": 0.3, "sentiment": 2.0})
    manual = (
        0.3 * model(ids, mask, "topic", torch.tensor([0, 3]))[1]
        + 2.0 * model(ids, mask, "sentiment", torch.tensor([1, 0]))[1]
    )
    assert torch.allclose(total, manual)
    assert set(losses) == {"topic", "sentiment"}


def test_the_worked_example_of_a_new_kind_trains_in_place_of_one(
    tmp_path: Path, tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/development.md's triplet-margin objective, as written there, put in the table in
    place of the positive-pairs objective: a triplet task trains with its loss (a hinge: at
    most 2 + margin, and not InfoNCE's values) and is scored by its metrics."""
    import csv
    import gzip
    import re
    import types

    from sentcli import api
    from sentcli import checkpoint as ckpt
    from sentcli.config import TaskKind
    from sentcli.objectives import OBJECTIVES

    from helpers import DATA, FAST, ROOT

    docs = (ROOT / "docs" / "development.md").read_text("utf-8")
    section = docs[docs.index("### Worked example") :]
    code = re.search(r"```python\n(.+?)```", section, re.S)
    assert code is not None
    triplet = types.ModuleType("triplet")
    exec(compile(code.group(1), "docs/development.md", "exec"), triplet.__dict__)
    with gzip.open(DATA / "stsb" / "train.csv.gz", "rt", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if float(r["score"]) >= 3.5][:130]
    with open(tmp_path / "triplets.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["anchor", "positive", "negative"])
        w.writerows(
            [r["sentence1"], r["sentence2"], rows[i - 1]["sentence1"]] for i, r in enumerate(rows)
        )
    opts = {**FAST, "max_steps": 6, "log_every": 1, "dropout": 0.0}
    task = api.TaskConfig("trip", str(tmp_path / "triplets.csv"))
    nce = api.train_mtl([task], tmp_path / "nce", tokenizer=tokenizer_path, options=opts)
    monkeypatch.setitem(OBJECTIVES, TaskKind.pairs, triplet.Triplet)
    margin = api.train_mtl([task], tmp_path / "margin", tokenizer=tokenizer_path, options=opts)
    assert margin.steps == 6 and margin.test["trip"]["kind"] == "triplet"
    assert set(margin.test["trip"]) >= {"val_loss", "recall@1", "mrr"}
    logged = [
        r["task_losses"]["trip"]
        for r in ckpt.read_metrics(tmp_path / "margin")
        if r["kind"] == "train"
    ]
    inf_nce = [
        r["task_losses"]["trip"]
        for r in ckpt.read_metrics(tmp_path / "nce")
        if r["kind"] == "train"
    ]
    assert len(logged) == 6 and all(0 <= x <= 2 + triplet.MARGIN for x in logged)
    assert logged != inf_nce and nce.test["trip"]["kind"] == "pairs"
