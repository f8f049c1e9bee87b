"""NaN/inf losses: the run stops at the bad step naming its task and keeps the last good
checkpoint; --skip-nonfinite N steps over up to N bad steps. The NaN is injected into the
real training step (the multi-task loss of chosen steps is multiplied by NaN)."""

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sentcli import api
from sentcli import checkpoint as ckpt
from sentcli.cli import app
from sentcli.errors import TrainingError
from sentcli.events import TrainWarning
from sentcli.training import multitask

from helpers import FAST

OPTS = {**FAST, "batch_size": 16, "log_every": 2, "eval_every": 4, "max_steps": 16}


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Calls (1-based training steps) listed in `state["at"]` get a NaN loss; the tasks of
    each poisoned step are recorded."""
    state: dict = {"at": set(), "calls": 0, "tasks": {}}
    original = multitask.weighted_loss

    def weighted_loss(model, batches, weights, shares=None):  # type: ignore[no-untyped-def]
        total, losses = original(model, batches, weights, shares)
        state["calls"] += 1
        if state["calls"] in state["at"]:
            state["tasks"][state["calls"]] = list(losses)
            losses = {t: v * float("nan") for t, v in losses.items()}
            total = total * float("nan")
        return total, losses

    monkeypatch.setattr(multitask, "weighted_loss", weighted_loss)
    yield state


def specs(topic_dir: Path, sentiment_dir: Path) -> list[api.TaskConfig]:
    return [
        api.TaskConfig("topic", str(topic_dir)),
        api.TaskConfig("sentiment", str(sentiment_dir)),
    ]


def all_finite(run: Path) -> bool:
    return all(torch.isfinite(v).all() for v in ckpt.load_weights(run)[0].values())


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, topic_dir: Path, sentiment_dir: Path, tokenizer_path: Path, poison: dict
) -> None:
    poison["at"] = {7}
    run = tmp_path / "m"
    with pytest.raises(TrainingError) as info:
        api.train_mtl(specs(topic_dir, sentiment_dir), run, tokenizer=tokenizer_path, options=OPTS)
    task = poison["tasks"][7][0]
    message = str(info.value)
    assert message.startswith(f"step 7: the loss of task {task} is nan")
    assert "last good checkpoint (step 4)" in message and "--resume" in message
    assert ckpt.load_weights(run)[1] == 4 and all_finite(run)
    assert ckpt.load_train_state(run, 4)["step"] == 4
    records = ckpt.read_metrics(run)
    assert records[-1]["kind"] == "nonfinite" and records[-1]["step"] == 7
    assert all(math.isfinite(r["loss"]) for r in records if r["kind"] == "train")
    # The kept state resumes (the injection does not repeat) to the end.
    poison["at"] = set()
    result = api.train_mtl([], run, resume=True)
    assert result.steps == 16 and all_finite(run)


def test_skip_nonfinite_steps_over_bad_steps_then_stops_past_the_tolerance(
    tmp_path: Path, topic_dir: Path, sentiment_dir: Path, tokenizer_path: Path, poison: dict
) -> None:
    poison["at"] = {3, 6}
    warnings: list[str] = []

    def on_event(e: object) -> None:
        if isinstance(e, TrainWarning):
            warnings.append(e.message)

    run = tmp_path / "skip"
    opts = {**OPTS, "skip_nonfinite": 2}
    result = api.train_mtl(
        specs(topic_dir, sentiment_dir), run, tokenizer=tokenizer_path, options=opts,
        on_event=on_event,
    )  # fmt: skip
    assert result.steps == 16 and all_finite(run)
    skipped = [w for w in warnings if "step skipped" in w]
    assert [w.split(":")[0] for w in skipped] == ["step 3", "step 6"]
    assert "(2 of 2 allowed)" in skipped[-1]
    assert ckpt.load_train_state(run, 16)["skipped"] == 2
    # A third bad step is one too many.
    poison["calls"], poison["at"] = 0, {2, 3, 5}
    with pytest.raises(TrainingError, match="step 5: .* after 2 skipped steps"):
        api.train_mtl(
            specs(topic_dir, sentiment_dir), tmp_path / "stop", tokenizer=tokenizer_path,
            options=opts,
        )  # fmt: skip


def test_cli_exits_1_with_one_line_and_the_resume_hint(
    tmp_path: Path, topic_dir: Path, sentiment_dir: Path, tokenizer_path: Path, poison: dict
) -> None:
    poison["at"] = {5}
    args = ["train-mtl", "--task", f"topic={topic_dir}", "--task", f"sentiment={sentiment_dir}"]
    args += ["--tokenizer", str(tokenizer_path), "-o", str(tmp_path / "m")]
    args += ["--n-layer", "2", "--n-head", "2", "--n-embd", "16", "--block-size", "16"]
    args += ["--device", "cpu", "--precision", "fp32", "--eval-every", "4", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "step 5: the loss of task" in errors[0]
    assert "Traceback" not in result.output
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["train"]["skip_nonfinite"] == 0


def test_a_skipped_step_leaves_the_weights_bit_identical(
    tmp_path: Path, topic_dir: Path, sentiment_dir: Path, tokenizer_path: Path, poison: dict
) -> None:
    """The skip is decided on the device (the fused optimizer's found_inf): a run whose 4th
    and last step is bad ends with exactly the weights of the same run stopped after 3."""
    opts = {**OPTS, "min_lr_ratio": 1.0, "warmup": 0, "log_every": 4, "eval_every": 0}  # flat LR
    api.train_mtl(
        specs(topic_dir, sentiment_dir), tmp_path / "three", tokenizer=tokenizer_path,
        options={**opts, "max_steps": 3},
    )  # fmt: skip
    poison["calls"], poison["at"] = 0, {4}
    api.train_mtl(
        specs(topic_dir, sentiment_dir), tmp_path / "four", tokenizer=tokenizer_path,
        options={**opts, "max_steps": 4, "skip_nonfinite": 1},
    )  # fmt: skip
    three, four = ckpt.load_weights(tmp_path / "three")[0], ckpt.load_weights(tmp_path / "four")[0]
    assert all(torch.equal(three[k], four[k]) for k in three)
    assert ckpt.load_train_state(tmp_path / "four", 4)["skipped"] == 1
