"""A training step makes no host sync: nothing from sentcli's own code reads a tensor back
(`.item()`, `.tolist()`, `.cpu()`, `float()`, `bool()`, `int()`) except at log, evaluation
and save steps, so a GPU never waits on the host between logs. The step also traces into
one graph (no graph breaks: `torch.compile` and CUDA graphs can take it whole)."""

import csv
import gzip
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import sentcli
from sentcli import api
from sentcli import checkpoint as ckpt
from sentcli.training import lm, multitask

from helpers import DATA, FAST

PACKAGE = str(Path(sentcli.__file__).parent)
READBACKS = ("item", "tolist", "cpu", "__float__", "__bool__", "__int__")
CHECKPOINTS = {"step_log", "unchecked", "snapshot", "run_eval", "checked_save"}
"""The loop's log, evaluation and save steps (training/loop.py): where reading back is
allowed."""


@pytest.fixture
def readbacks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, bool]]]:
    """Every tensor readback made from sentcli's own code while the training loop runs:
    (what, where, at a log/eval/save step). Torch's own calls (CPU AdamW reads its step
    counters) are not counted: the caller must be a sentcli file."""
    calls: list[tuple[str, str, bool]] = []

    def counted(name: str, original: Any) -> Any:
        def wrapper(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(PACKAGE):
                names, frame = [], caller
                while frame is not None:
                    names.append(frame.f_code.co_name)
                    frame = frame.f_back
                if "train_loop" in names:  # setup, the test pass and callbacks aside
                    where = f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno}"
                    calls.append((name, where, bool(CHECKPOINTS & set(names))))
            return original(self, *args, **kwargs)

        return wrapper

    for name in READBACKS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    yield calls


def tasks() -> list[str]:
    return [f"topic={DATA / 'ag_news'}", f"sentiment={DATA / 'imdb'}"]


OPTS = {**FAST, "max_samples_per_task": 96, "log_every": 4, "eval_every": 12, "max_steps": 24}


def test_train_mtl_steps_read_nothing_back_between_logs(
    tmp_path: Path, tokenizer_path: Path, readbacks: list[tuple[str, str, bool]]
) -> None:
    """Two tasks, gradient tracking on (per-group norms every step), --skip-nonfinite on
    (the skip is decided on the device), 24 steps: readbacks only at logs, evals, saves."""
    opts = {**OPTS, "skip_nonfinite": 3, "save_every": 8}
    api.train_mtl(tasks(), tmp_path / "m", tokenizer=tokenizer_path, options=opts)
    between = [c for c in readbacks if not c[2]]
    assert between == []
    assert any(c[2] for c in readbacks)  # the counting works: the logs read back
    logs = [r for r in ckpt.read_metrics(tmp_path / "m") if r["kind"] == "train"]
    assert [r["step"] for r in logs] == [4, 8, 12, 16, 20, 24]


def test_pretrain_steps_read_nothing_back_between_logs(
    tmp_path: Path, tokenizer_path: Path, readbacks: list[tuple[str, str, bool]]
) -> None:
    opts = {k: v for k, v in OPTS.items() if k != "max_samples_per_task"}
    api.pretrain([str(DATA / "imdb")], tmp_path / "lm", tokenizer=tokenizer_path, options=opts)
    assert [c for c in readbacks if not c[2]] == []
    assert any(c[2] for c in readbacks)


def test_round_robin_with_an_even_log_interval_logs_every_task_and_head(
    tmp_path: Path, tokenizer_path: Path
) -> None:
    """Round-robin over two tasks with --log-every 4: every logged step is a topic step, yet
    each log holds both tasks' mean losses and both heads' gradient norms (the mean and the
    max over the window), since every step adds to the window on the device."""
    opts = {**OPTS, "max_steps": 16, "eval_every": 16}
    api.train_mtl(tasks(), tmp_path / "m", tokenizer=tokenizer_path, options=opts)
    logs = [r for r in ckpt.read_metrics(tmp_path / "m") if r["kind"] == "train"]
    assert len(logs) == 4
    heads = {"head.topic", "head.sentiment"}
    for r in logs:
        assert set(r["task_losses"]) == {"topic", "sentiment"}
        assert heads <= set(r["group_norms"]) == set(r["group_norms_max"])
        for g, mean in r["group_norms"].items():
            assert 0 < mean <= r["group_norms_max"][g] + 1e-6


def explained(module: torch.nn.Module, *args: Any) -> Any:
    torch._dynamo.reset()
    return torch._dynamo.explain(module)(*args)


@pytest.mark.parametrize(
    "kind,spec,extra",
    [
        ("classification", None, {"schedule": "joint"}),  # two heads in one step
        ("scored", f"sts={DATA / 'stsb'}", {}),  # CoSENT
        ("pairs", "pairs", {}),  # in-batch negatives
        ("text", f"sim={DATA / 'imdb_unsup'}", {"dropout": 0.1}),  # SimCSE
    ],
)
def test_the_training_step_traces_into_one_graph(
    tmp_path: Path,
    tokenizer_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    spec: str | None,
    extra: dict[str, Any],
) -> None:
    """`torch._dynamo.explain` of a real step's module (trunk, heads, losses) on a real
    batch finds no graph break (tracing only: no inductor compile)."""
    captured: list[tuple[Any, ...]] = []
    forward = multitask.StepLoss.forward

    def capture(self: Any, batches: Any, shares: Any = None) -> Any:
        captured.append((self, batches, shares))
        return forward(self, batches, shares)

    monkeypatch.setattr(multitask.StepLoss, "forward", capture)
    opts = {**FAST, "max_steps": 1, "max_samples_per_task": 32, "max_eval_batches": 1} | extra
    if spec == "pairs":  # STS-B's sentence pairs without their scores: (anchor, positive)
        with gzip.open(DATA / "stsb" / "train.csv.gz", "rt", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [(r["sentence1"], r["sentence2"]) for r in itertools.islice(reader, 64)]
        with open(tmp_path / "pairs.csv", "w", encoding="utf-8", newline="") as out:
            csv.writer(out).writerows([("anchor", "positive"), *rows])
        spec = f"pairs={tmp_path / 'pairs.csv'}"
    if spec is None:
        api.train_mtl(tasks(), tmp_path / "r", tokenizer=tokenizer_path, options=opts)
    else:
        api.train_encoder(spec, tmp_path / "r", tokenizer=tokenizer_path, options=opts)
        assert ckpt.read_config(tmp_path / "r").tasks[0].kind == kind
    module, batches, shares = captured[0]
    assert len(batches) == (2 if spec is None else 1)
    report = explained(module, batches, shares)
    assert (report.graph_break_count, report.graph_count) == (0, 1), report.break_reasons


def test_the_language_model_step_traces_into_one_graph(
    tmp_path: Path, tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: list[tuple[Any, ...]] = []
    batch_loss = lm.LMRecipe.batch_loss

    def capture(self: Any, module: Any, blocks: Any) -> Any:
        captured.append((module, torch.from_numpy(blocks.astype("int64"))))
        return batch_loss(self, module, blocks)

    monkeypatch.setattr(lm.LMRecipe, "batch_loss", capture)
    opts = {**FAST, "max_steps": 1, "max_eval_batches": 1}
    api.pretrain([str(DATA / "imdb")], tmp_path / "lm", tokenizer=tokenizer_path, options=opts)
    module, x = captured[0]
    report = explained(module, x[:, :-1], x[:, 1:])
    assert (report.graph_break_count, report.graph_count) == (0, 1), report.break_reasons


def test_batch_tokens_gives_fixed_shape_batches(
    tmp_path: Path, tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--batch-tokens 64 on train-mtl (block 16: buckets 8 and 16 of 8 and 4 rows) and on
    pretrain (4 blocks of 16): every training batch has one of those shapes."""
    shapes: set[tuple[int, ...]] = set()
    forward = multitask.StepLoss.forward

    def capture(self: Any, batches: Any, shares: Any = None) -> Any:
        shapes.update(tuple(b.ids.shape) for b in batches)
        return forward(self, batches, shares)

    monkeypatch.setattr(multitask.StepLoss, "forward", capture)
    opts = {**OPTS, "batch_tokens": 64, "max_steps": 30}
    api.train_mtl(tasks(), tmp_path / "m", tokenizer=tokenizer_path, options=opts)
    assert shapes and shapes <= {(8, 8), (4, 16)}
    assert ckpt.read_config(tmp_path / "m").train.batch_tokens == 64

    lm_shapes: set[tuple[int, ...]] = set()
    batch_loss = lm.LMRecipe.batch_loss

    def lm_capture(self: Any, module: Any, blocks: Any) -> Any:
        if torch.is_grad_enabled():  # the training step (evaluation runs under no_grad)
            lm_shapes.add(blocks.shape)
        return batch_loss(self, module, blocks)

    monkeypatch.setattr(lm.LMRecipe, "batch_loss", lm_capture)
    opts = {k: v for k, v in opts.items() if k != "max_samples_per_task"}
    api.pretrain([str(DATA / "imdb")], tmp_path / "lm", tokenizer=tokenizer_path, options=opts)
    assert lm_shapes == {(4, 17)}


def test_a_run_stopped_inside_a_log_window_resumes_to_the_same_logs(
    tmp_path: Path, tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped (SIGINT) after step 5 with --log-every 3, the saved state holds steps 4-5's
    loss, task and gradient-norm sums; resumed, the log at step 6 is the one an uninterrupted
    run writes, to the bit."""
    import os
    import signal

    opts = {**OPTS, "log_every": 3, "max_steps": 9, "eval_every": 9}
    api.train_mtl(tasks(), tmp_path / "full", tokenizer=tokenizer_path, options=opts)
    calls = {"n": 0}
    original = multitask.weighted_loss

    def stop_after_five(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)  # seen before step 6: saved at step 5
        return original(*args, **kwargs)

    monkeypatch.setattr(multitask, "weighted_loss", stop_after_five)
    cut = api.train_mtl(tasks(), tmp_path / "cut", tokenizer=tokenizer_path, options=opts)
    assert cut.interrupted and cut.steps == 5
    monkeypatch.setattr(multitask, "weighted_loss", original)
    api.train_mtl([], tmp_path / "cut", resume=True)

    def logs(run: Path) -> list[dict[str, Any]]:
        keep = ("step", "loss", "task_losses", "group_norms", "group_norms_max")
        records = ckpt.read_metrics(run)
        return [{k: r[k] for k in keep} for r in records if r["kind"] == "train"]

    assert [r["step"] for r in logs(tmp_path / "full")] == [3, 6, 9]
    assert logs(tmp_path / "cut") == logs(tmp_path / "full")
