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
from sentcli.objectives import Batch, Encoded, objective
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
    # at scale 1 the terms are near 1, so the leading 1 (the zero logit) shows
    small = [math.exp((cos[j] - cos[i]).item()) for i in range(6) for j in range(6)
             if scores[i] > scores[j]]  # fmt: skip
    assert cosent(cos, scores, 1.0).item() == pytest.approx(math.log1p(sum(small)), rel=1e-5)
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
    # a task without a weight counts once; a step of one task is its own loss
    total, losses = weighted_loss(model, step, {"topic": 0.3})
    assert torch.allclose(total, 0.3 * losses["topic"] + losses["sentiment"])
    alone, parts = weighted_loss(model, step[:1], {})
    assert torch.equal(alone, parts["topic"]) and alone.shape == ()


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


# Each kind's objective against a computation written out here.


def small_model() -> MultiTaskModel:
    return MultiTaskModel(ModelConfig(vocab_size=30, n_embd=8, n_head=2), {})


def vectors(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_cosine_mse_and_the_rank_statistics() -> None:
    from sentcli.objectives.scored import _ranks, cosine_mse, cosines, pearson

    cos, scores = torch.tensor([0.1, 0.9, -0.5]), torch.tensor([1.0, 5.0, 0.0])
    want = ((cos - (scores - 0.0) / 5.0) ** 2).mean()
    assert cosine_mse(cos, scores, 0.0, 5.0).item() == pytest.approx(want.item())
    # a 1-5 scale: 1 maps to cosine 0 and 5 to 1
    assert cosine_mse(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([1.0, 3.0, 5.0]), 1.0, 5.0) == 0
    assert _ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]  # ties share
    x, y = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0])
    assert pearson(x, y) == pytest.approx(float(np.corrcoef(x, y)[0, 1]))
    a, b = vectors(5), vectors(5, seed=1)
    a[0] = 0.0  # a zero vector: cosine 0, not NaN
    want_cos = [
        0.0 if not a[i].any() else float(a[i] @ b[i] / np.linalg.norm(a[i]) / np.linalg.norm(b[i]))
        for i in range(5)
    ]
    np.testing.assert_allclose(cosines(a, b), want_cos, rtol=1e-5, atol=1e-7)


def test_split_loss_weighs_each_batch_by_its_rows() -> None:
    from sentcli.objectives.base import split_loss

    seen: list[tuple[int, int]] = []

    def loss(
        sides: list[torch.Tensor], target: torch.Tensor | None, n: int, ranks: Dist
    ) -> torch.Tensor:
        seen.append((len(sides), n))
        assert target is not None and not ranks.on
        return target.float().mean()

    sides = [vectors(5), vectors(5, seed=1)]
    target = np.array([1.0, 1.0, 4.0, 4.0, 10.0])
    got = split_loss(loss, sides, target, 2, 1)
    assert got == pytest.approx((1.0 * 2 + 4.0 * 2 + 10.0 * 1) / 5)
    assert seen == [(2, 2), (2, 2), (2, 1)]
    seen.clear()
    split_loss(loss, sides[:1], target, 5, 2)  # two views: the side twice
    assert seen == [(2, 5)]


def pair_spec(kind: str, columns: int = 2, **kw: object) -> TaskConfig:
    cols = ["sentence1", "sentence2", "negative"][:columns]
    return TaskConfig("t", "x", kind=kind, pair_columns=cols, **kw)  # type: ignore[arg-type]


def test_scored_pairs_train_by_cosent_or_cosine_mse_and_score_by_rank() -> None:
    from sentcli.config import TrainConfig
    from sentcli.errors import DataError
    from sentcli.objectives.scored import cosent, cosine_mse, cosines, spearman

    spec = pair_spec("scored", score_range=[0.0, 5.0])
    a, b = torch.tensor(vectors(6)), torch.tensor(vectors(6, seed=1))
    y = torch.tensor([0.0, 1, 2, 3, 4, 5])
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    obj = objective(spec, TrainConfig(similarity_scale=7.0, batch_size=4))
    assert obj.head(16) is None and obj.views == 1 and obj.scorable and obj.outputs == "vectors"
    assert obj.vector_loss([a, b], y, 6, Dist()).item() == pytest.approx(cosent(cos, y, 7.0).item())  # type: ignore[attr-defined]
    mse = objective(spec, TrainConfig(similarity_loss="cosine-mse"))
    got = mse.vector_loss([a, b], y, 6, Dist()).item()  # type: ignore[attr-defined]
    assert got == pytest.approx(cosine_mse(cos, y, 0.0, 5.0).item())
    outs = [a.numpy(), b.numpy()]
    m = obj.metrics(outs, y.numpy())
    assert m["spearman"] == pytest.approx(spearman(cosines(*outs), y.numpy()))
    enc = Encoded([[np.zeros(1)] * 6] * 2, y.numpy())
    full = obj.scores(
        MultiTaskModel(ModelConfig(vocab_size=30, n_embd=8, n_head=2), {}), enc, outs, True
    )
    assert full["kind"] == "scored" and full["pairs"] == 6 and set(full) == {
        "val_loss", "spearman", "pearson", "kind", "pairs"
    }  # fmt: skip
    model = MultiTaskModel(ModelConfig(vocab_size=30, n_embd=8, n_head=2), {})
    assert set(obj.scores(model, enc, outs, False)) == {"val_loss", "spearman", "pearson"}
    batches = [cosent(cos[:4], y[:4], 7.0).item() * 4, cosent(cos[4:], y[4:], 7.0).item() * 2]
    assert full["val_loss"] == pytest.approx(sum(batches) / 6, rel=1e-5)
    with pytest.raises(DataError) as refused:
        obj.metrics(outs, np.full(6, 3.0))
    assert str(refused.value) == (
        "every gold score of the split is 3: there is no ranking to score against (an "
        "unlabelled test split?); give pairs with their scores"
    )


def test_positive_pairs_and_simcse_train_by_in_batch_negatives() -> None:
    from sentcli.config import TrainConfig
    from sentcli.objectives.pairs import info_nce, retrieval

    a, p, n = (torch.tensor(vectors(4, seed=s)) for s in range(3))
    obj = objective(pair_spec("pairs", 3), TrainConfig(similarity_scale=5.0))
    assert obj.head(8) is None and obj.scorable and obj.views == 1
    got = obj.vector_loss([a, p, n], None, 4, Dist()).item()  # type: ignore[attr-defined]
    assert got == pytest.approx(info_nce(a, [p, n], 5.0, 4, Dist()).item())
    assert obj.metrics([a.numpy(), p.numpy()], None) == retrieval(a.numpy(), p.numpy())
    model = MultiTaskModel(ModelConfig(vocab_size=30, n_embd=8, n_head=2), {})
    enc = Encoded([[np.zeros(1)] * 4] * 3, None)
    full = obj.scores(model, enc, [a.numpy(), p.numpy(), n.numpy()], True)
    assert full["kind"] == "pairs" and full["pairs"] == 4 and "recall@1" in full
    assert math.isfinite(full["val_loss"]) and full["val_loss"] > 0  # what --keep-best reads
    simcse = objective(TaskConfig("s", "x", kind="text"), TrainConfig(similarity_scale=5.0))  # type: ignore[arg-type]
    assert simcse.views == 2 and not simcse.scorable and simcse.metrics([a.numpy()], None) == {}
    views = simcse.vector_loss([a, p], None, 4, Dist()).item()  # type: ignore[attr-defined]
    assert views == pytest.approx(info_nce(a, [p], 5.0, 4, Dist()).item())  # view 1 → view 2
    two_views = simcse.scores(model, Encoded([[np.zeros(1)] * 4], None), [a.numpy()], True)
    assert two_views["val_loss"] == pytest.approx(info_nce(a, [a], 5.0, 4, Dist()).item())
    assert two_views["kind"] == "text" and two_views["pairs"] == 4
    assert set(simcse.scores(model, Encoded([[np.zeros(1)] * 4], None), [a.numpy()], False)) == {
        "val_loss"
    }


def test_distillation_projects_onto_the_teachers_width_and_scores_the_cosine() -> None:
    from sentcli.objectives.distill import distill_loss

    spec = TaskConfig("d", "x", kind="distill", teacher_dim=6)  # type: ignore[arg-type]
    obj = objective(spec)
    assert obj.head(8) == 6 and obj.head(6) is None and not obj.scorable
    assert objective(TaskConfig("d", "x", kind="distill")).head(8) is None  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = MultiTaskModel(ModelConfig(vocab_size=30, n_embd=8, n_head=2), {"d": 6})
    student = vectors(5)
    teacher = torch.nn.functional.normalize(torch.tensor(vectors(5, 6, seed=1)), dim=-1)
    enc = Encoded([[np.zeros(1)] * 5], teacher.numpy())
    got = obj.scores(model, enc, [student], True)
    with torch.no_grad():
        projected = model.heads["d"](torch.tensor(student))
    assert got["val_loss"] == pytest.approx(distill_loss(projected, teacher).item(), rel=1e-5)
    cos = torch.nn.functional.cosine_similarity(projected, teacher, dim=-1).mean()
    assert got["cosine"] == pytest.approx(cos.item(), rel=1e-5)
    assert got["kind"] == "distill" and got["pairs"] == 5
    want = torch.nn.functional.mse_loss(torch.nn.functional.normalize(projected, dim=-1), teacher)
    assert distill_loss(projected, teacher).item() == pytest.approx(want.item())


def test_a_vector_objective_with_matryoshka_widths_is_wrapped_with_its_weights() -> None:
    from sentcli.config import TrainConfig
    from sentcli.objectives.distill import distill_loss
    from sentcli.objectives.matryoshka import Matryoshka

    train = TrainConfig(matryoshka_dims=[8, 4], matryoshka_weights=[1.0, 2.0])
    spec = TaskConfig("s", "x", kind="scored", pair_columns=["a", "b"])  # type: ignore[arg-type]
    wrapped = objective(spec, train)
    assert isinstance(wrapped, Matryoshka) and wrapped.weights == [1.0, 2.0]
    labelled = objective(TaskConfig("c", "x", label_names=["a", "b"]), train)
    assert not isinstance(labelled, Matryoshka)  # a head reads the whole vector
    # a distilled prefix matches the teacher's first dimensions, re-normalised
    student, teacher = torch.tensor(vectors(5, 8)), torch.tensor(vectors(5, 8, seed=1))
    teacher = F.normalize(teacher, dim=-1)
    want = F.mse_loss(F.normalize(student[:, :4], dim=-1), F.normalize(teacher[:, :4], dim=-1))
    assert distill_loss(student[:, :4], teacher).item() == pytest.approx(want.item())


def test_classification_scores_its_heads_logits() -> None:
    from sentcli.objectives.classification import scores

    obj = objective(TaskConfig("c", "x", label_names=["a", "b", "c"]))  # kind None: labelled
    assert obj.head(8) == 3 and obj.outputs == "logits" and not obj.scorable
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    y = np.array([0, 1, 1, 0])
    full = obj.scores(
        MultiTaskModel(ModelConfig(vocab_size=30, n_embd=8, n_head=2), {}),
        Encoded([[]], y),
        [logits],
        True,
    )
    ce = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(y)).item()
    assert full["val_loss"] == pytest.approx(ce) and full["accuracy"] == 0.75
    assert full["confusion"] == [[2, 0, 0], [0, 1, 1], [0, 0, 0]]
    short = scores(logits, y, ["a", "b", "c"], False)
    assert set(short) == {"val_loss", "accuracy", "macro_f1"}
    assert obj.metrics([logits], y)["accuracy"] == 0.75


def test_the_table_gives_each_kind_its_objective_heads_and_labels() -> None:
    from sentcli.objectives import OBJECTIVES, heads, labels
    from sentcli.objectives.classification import Classification
    from sentcli.objectives.distill import Distill

    assert set(OBJECTIVES) == {"classification", "scored", "pairs", "text", "distill"}
    assert isinstance(objective(TaskConfig("a", "x")), Classification)  # an old run: no kind
    tasks = [
        TaskConfig("d", "x", kind="distill", teacher_dim=12),  # type: ignore[arg-type]
        TaskConfig("s", "x", kind="scored"),  # type: ignore[arg-type]
        TaskConfig("c", "x", label_names=["n", "p"], kind="classification"),  # type: ignore[arg-type]
    ]
    assert isinstance(objective(tasks[0]), Distill)
    # labelled tasks' heads first, then the others, each in task order: the order every
    # run has had (a run's parameters, and so its optimizer state, follow it)
    assert list(heads(tasks, 8).items()) == [("c", 2), ("d", 12)]
    assert heads(tasks, 12) == {"c": 2}  # a teacher as wide as the model: no projection
    assert labels(tasks) == {"c": ["n", "p"]}


def test_a_batch_embeds_every_side_in_one_pass_and_loads_keep_the_columns(tmp_path: Path) -> None:
    from datasets import Dataset

    from sentcli.config import TrainConfig
    from sentcli.data.pairs import Shape
    from sentcli.objectives.base import embed_sides, load_pair_task

    model = MultiTaskModel(ModelConfig(vocab_size=30, n_embd=8, n_head=2, block_size=8), {})
    ids, mask = collate([np.arange(5, 9), np.arange(5, 7), np.arange(6, 9), np.arange(5, 8)])
    calls = []
    model.embed = lambda i, m, p=None: (
        calls.append(i.shape),
        MultiTaskModel.embed(model, i, m, p),
    )[1]  # type: ignore[method-assign]
    sides = embed_sides(model, Batch("t", ids, mask, 2, 2, None, objective(pair_spec("pairs"))))
    assert calls == [(4, 4)] and [s.shape for s in sides] == [(2, 8), (2, 8)]
    table = Dataset.from_dict(
        {"a": ["x y"] * 10, "b": ["y z"] * 10, "score": [float(i) for i in range(10)]}
    )
    shape = Shape("scored", ["a", "b"], "score")  # type: ignore[arg-type]
    spec, splits = load_pair_task(
        pair_spec("scored"), shape, {"train": table}, TrainConfig(val_fraction=0.2)
    )
    assert spec.pair_columns == ["a", "b"] and spec.score_column == "score"
    assert spec.score_range == [min(splits["train"]["score"]), max(splits["train"]["score"])]
    assert (len(splits["train"]), len(splits["validation"])) == (8, 2) and "test" not in splits


def test_weighted_loss_scales_each_task_by_its_share() -> None:
    torch.manual_seed(0)
    model = MultiTaskModel(ModelConfig(vocab_size=30, n_embd=8, n_head=2), {"a": 2, "b": 3})
    model.eval()  # no dropout: the same loss twice
    ids, mask = collate([np.arange(5, 9), np.arange(5, 7)])
    step = [
        Batch(
            "a",
            ids,
            mask,
            2,
            2,
            torch.tensor([0, 1]),
            objective(TaskConfig("a", "x", label_names=["0", "1"])),
        ),
        Batch(
            "b",
            ids,
            mask,
            2,
            2,
            torch.tensor([2, 0]),
            objective(TaskConfig("b", "x", label_names=["0", "1", "2"])),
        ),
    ]
    total, losses = weighted_loss(model, step, {"a": 2.0}, {"a": 0.5, "b": 1.5})
    la = model(ids, mask, "a", torch.tensor([0, 1]))[1]
    lb = model(ids, mask, "b", torch.tensor([2, 0]))[1]
    torch.testing.assert_close(losses["a"], la * 0.5)
    torch.testing.assert_close(losses["b"], lb * 1.5)
    torch.testing.assert_close(total, 2.0 * la * 0.5 + 1.0 * lb * 1.5)


def _rows(ds: object, column: str) -> list[str]:
    return list(ds[column])  # type: ignore[index]


def test_each_kind_loads_the_splits_it_is_given_and_encodes_them(
    topic_dir: Path, tokenizer: object
) -> None:
    """load keeps the splits it is handed (cut to a few rows here: not re-read from the
    source) and the train config's validation share; encode gives every side's ids, cut to
    the block as `tokenizer.encode` cuts them, and the kind's targets."""
    from dataclasses import replace

    from sentcli.config import TrainConfig
    from sentcli.data.pairs import SIDES, shape_of
    from sentcli.tokenizer import encode

    from helpers import ROOT

    tok, block = tokenizer, 8
    train = TrainConfig(val_fraction=0.25, seed=3)
    spec = TaskConfig("topic", str(topic_dir))
    shape, splits, names = shape_of(spec)
    given = {"train": splits["train"].select(range(100)), "test": splits["test"].select(range(9))}
    done, loaded = objective(spec, train).load(shape, given, names, False)
    assert done.label_names == (topic_dir / "labels.txt").read_text().split()
    assert (len(loaded["train"]), len(loaded["validation"]), len(loaded["test"])) == (75, 25, 9)
    kept = ["Sci/Tech", "Business", "Sports", "World"]  # a resumed run keeps its label names
    resumed, again = objective(replace(spec, label_names=kept), train).load(
        shape, given, names, True
    )
    assert resumed.label_names == kept
    enc = objective(done, train).encode(again["test"], tok, block, None)  # type: ignore[arg-type]
    texts = _rows(again["test"], "text")
    assert [list(s) for s in enc.sides[0]] == [list(s) for s in encode(tok, texts, block)]  # type: ignore[arg-type]
    assert max(len(s) for s in enc.sides[0]) == block  # news texts are longer than 8 tokens
    want = splits["test"]["label"][:9]  # integer labels: indices into the run's names
    assert enc.target is not None and enc.target.dtype == np.int64
    assert enc.target.tolist() == want

    pairs = TaskConfig("sts", str(ROOT / "data" / "stsb"), None)  # no flags: detected
    shape, splits, names = shape_of(pairs)
    given = {"train": splits["train"].select(range(40))}
    pairs = replace(pairs, kind=shape.kind)  # as training/tasks.py gives it: its detected kind
    done, loaded = objective(pairs, train).load(shape, given, names, False)
    assert done.kind == "scored" and "test" not in loaded
    assert (len(loaded["train"]), len(loaded["validation"])) == (30, 10)
    part = loaded["validation"]
    enc = objective(done, train).encode(part, tok, block, None)  # type: ignore[arg-type]
    assert len(enc.sides) == 2 and enc.target is not None and enc.target.dtype == np.float32
    assert enc.target.tolist() == pytest.approx(_rows(part, "score"))
    for side, column in zip(enc.sides, SIDES[:2], strict=True):
        assert [list(s) for s in side] == [list(s) for s in encode(tok, _rows(part, column), block)]  # type: ignore[arg-type]

    lines = TaskConfig("unsup", str(ROOT / "data" / "imdb_unsup"), None)
    shape, splits, names = shape_of(lines)
    given = {"train": splits["train"].select(range(20))}
    targets = np.arange(20, dtype=np.float32).reshape(5, 4)  # a teacher's, for 5 rows
    for kind in ("text", "distill"):
        task = TaskConfig("unsup", lines.source, kind=kind, teacher_dim=4)  # type: ignore[arg-type]
        done, loaded = objective(task, train).load(shape, given, names, False)
        assert (len(loaded["train"]), len(loaded["validation"])) == (15, 5)
        part = loaded["validation"]
        enc = objective(done, train).encode(part, tok, block, lambda ds: targets)  # type: ignore[arg-type]
        assert len(enc.sides) == 1
        assert [list(s) for s in enc.sides[0]] == [
            list(s) for s in encode(tok, _rows(part, "text"), block)
        ]  # type: ignore[arg-type]
        assert enc.target is (targets if kind == "distill" else None)


def test_cosines_and_retrieval_do_not_depend_on_the_vectors_lengths() -> None:
    """Short vectors (norm below 1) and positives of unequal lengths: only the directions
    count."""
    from sentcli.objectives.pairs import retrieval
    from sentcli.objectives.scored import cosines

    a, b = vectors(6), vectors(6, seed=1)
    lengths = np.array([[0.01], [0.3], [5.0], [0.002], [40.0], [1.0]])
    assert cosines(a * 0.01, b * lengths) == pytest.approx(cosines(a, b), rel=1e-5)
    anchors, positives = vectors(30, 4, seed=2), vectors(30, 4, seed=3)
    positives[:15] += anchors[:15]  # half the anchors close to their positive
    scaled = positives * 10 ** np.random.default_rng(4).uniform(-3, 2, (30, 1))  # 0.001–100×
    assert retrieval(anchors, scaled) == retrieval(anchors, positives)
    unit = positives / np.linalg.norm(positives, axis=1, keepdims=True)
    sims = (anchors / np.linalg.norm(anchors, axis=1, keepdims=True)) @ unit.T
    rank = (sims >= np.diag(sims)[:, None]).sum(axis=1)
    assert retrieval(anchors, positives) == pytest.approx(
        {"recall@1": float(np.mean(rank == 1)), "mrr": float(np.mean(1 / rank))}
    )


def test_the_global_batch_gathers_strided_shards_padded_to_one_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under torchrun rank r holds rows r, r + world, …: 5 rows on 2 ranks are shards of 3
    and 2 rows, padded to 3 with zeros at the end; the padding is marked and the rank's own
    block starts at rank · 3."""
    from sentcli.objectives import pairs

    rows = torch.arange(10, dtype=torch.float32).reshape(5, 2) + 1
    shards = [rows[r::2] for r in range(2)]
    sent: list[torch.Tensor] = []

    def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
        sent.append(t)
        return [F.pad(s, (0, 0, 0, 3 - len(s))) for s in shards]  # every rank's, padded

    monkeypatch.setattr(pairs.dist_nn, "all_gather", all_gather)
    got, start, pad = pairs._global(shards[1], 5, Dist(rank=1, world=2))
    assert sent[0].tolist() == [[3.0, 4.0], [7.0, 8.0], [0.0, 0.0]]
    assert got.shape == (6, 2) and start == 3
    assert pad.tolist() == [False, False, False, False, False, True]
    alone, start, pad = pairs._global(rows, 5, Dist())
    assert alone is rows and start == 0 and pad.tolist() == [False] * 5


def test_distillation_trains_the_projected_vector_towards_the_teachers() -> None:
    from sentcli.objectives.distill import distill_loss

    torch.manual_seed(0)
    model = MultiTaskModel(ModelConfig(vocab_size=30, n_embd=8, n_head=2, block_size=8), {"d": 6})
    model.eval()
    obj = objective(TaskConfig("d", "x", kind="distill", teacher_dim=6))  # type: ignore[arg-type]
    ids, mask = collate([np.arange(5, 9), np.arange(5, 7), np.arange(6, 9)])
    teacher = F.normalize(torch.tensor(vectors(3, 6, seed=1)), dim=-1)
    got = obj.loss(model, Batch("d", ids, mask, 3, 3, teacher, obj))
    with torch.no_grad():
        want = distill_loss(model.heads["d"](model.embed(ids, mask)), teacher)
    assert got.item() == pytest.approx(want.item(), rel=1e-6) and got.requires_grad


def test_each_pair_kinds_loss_is_its_vector_loss_on_one_forward_pass() -> None:
    """`loss` (what a training step calls) embeds the batch once and hands every side, the
    target and the global row count to the kind's vector loss: scored pairs, positive pairs
    and SimCSE's two views."""
    from sentcli.config import TrainConfig

    model = MultiTaskModel(ModelConfig(vocab_size=30, n_embd=8, n_head=2, block_size=8), {})
    model.eval()  # no dropout: the reference pass sees the same vectors
    ids, mask = collate([np.arange(5, 9), np.arange(5, 7), np.arange(6, 9), np.arange(7, 12)])
    train = TrainConfig(similarity_scale=5.0)
    kinds = [
        (pair_spec("scored", score_range=[0.0, 5.0]), torch.tensor([1.0, 4.0])),
        (pair_spec("pairs"), None),
        (TaskConfig("s", "x", kind="text"), None),  # type: ignore[arg-type]
    ]
    for spec, target in kinds:
        obj = objective(spec, train)
        with torch.no_grad():
            got = obj.loss(model, Batch("t", ids, mask, 2, 2, target, obj))
            sides = list(torch.split(model.embed(ids, mask), 2))
            want = obj.vector_loss(sides, target, 2, Dist())  # type: ignore[attr-defined]
        assert got.item() == pytest.approx(want.item()), spec.kind
        assert got.item() > 0
