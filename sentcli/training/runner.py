"""The run-folder side of training: drive the loop, write checkpoints, metrics, warnings and
plots; the result every training command returns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn
from tokenizers import Tokenizer

from sentcli import checkpoint as ckpt
from sentcli import dist
from sentcli.config import RunConfig, RunKind, resumed_config
from sentcli.device import dtype_name
from sentcli.errors import CheckpointError, ConfigError, DiskFullError, TrainingError
from sentcli.events import (
    EvalLog,
    Interrupted,
    NonFinite,
    OnEvent,
    Start,
    StepLog,
    TrainWarning,
    record,
)
from sentcli.metrics import (
    grad_summary,
    grad_warnings,
    history_of,
    plot_confusion,
    plot_curves,
    selection_score,
)
from sentcli.training import tracking
from sentcli.training.loop import Recipe, total_steps, train_loop


@dataclass
class TrainResult:
    run_dir: Path
    config: RunConfig
    steps: int
    tokens_seen: int
    interrupted: int
    """The signal that stopped the run early (2 Ctrl-C, 15 SIGTERM; state saved), 0 if none."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One dict of validation metrics per evaluation."""
    test: dict[str, Any] = field(default_factory=dict)
    """Classifier runs: per task, metrics on the test split (validation when there is none)."""
    test_splits: dict[str, str] = field(default_factory=dict)
    init: dict[str, Any] | None = None
    """With --init: {"run", "tensors", "parameters"} actually transferred."""
    grad_norms: list[tuple[str, float, float, float, float]] = field(default_factory=list)
    """Classifier runs: (group, first, last, min, max) gradient norm over the logged steps."""
    throughput: dict[str, Any] = field(default_factory=dict)
    """tokens_per_s (median of the logged windows), flops_per_token, model_flops_per_s and,
    on CUDA, peak_memory_bytes."""


@dataclass
class Outcome:
    """What driving the loop gave: steps done, tokens seen, the signal that interrupted the
    run (0: none) and every metrics record of the run (earlier sessions of a resumed run
    included)."""

    steps: int
    seen: int
    interrupted: int
    records: list[dict[str, Any]]


MADE_BY = {RunKind.lm: "pretrain", RunKind.encoder: "train-encoder", RunKind.mtl: "train-mtl"}
"""The command that makes (and resumes) each kind of run."""


def resume_config(
    run_dir: Path,
    kind: RunKind,
    options: Mapping[str, Any] | None,
    config_file: Path | None,
    on_event: OnEvent,
) -> RunConfig:
    """A resumed run's config.json with the runtime flags given now; a warning names the
    other flags, which are ignored (the run keeps its own settings). The run must be of
    `kind`: a run continues under the command that started it."""
    saved = ckpt.read_config(run_dir)
    ckpt.check_shapes(saved, run_dir)  # before its tasks are loaded and its model built
    if saved.kind != kind:
        raise ConfigError(
            f"--resume: {run_dir} is a {MADE_BY[saved.kind]} run, not a {MADE_BY[kind]} "
            f"one; continue it with sentcli {MADE_BY[saved.kind]} --resume -o {run_dir}"
        )
    config, ignored = resumed_config(saved, options, config_file)
    if ignored and on_event:
        message = (
            "--resume continues with the run's own settings (its config.json); ignored: "
            + ", ".join(ignored)
        )
        on_event(TrainWarning(message))
    return config


def run_training(
    run_dir: Path,
    config: RunConfig,
    model: nn.Module,
    tokenizer: Tokenizer,
    recipe: Recipe,
    rt: dist.Runtime,
    resume: bool,
    on_event: OnEvent,
) -> Outcome:
    """Drive train_loop, writing metrics.jsonl and checkpoints. Under torchrun only the main
    rank writes. A non-finite loss raises TrainingError (the last checkpoint stays)."""
    write = rt.ranks.main
    state = None
    if resume:
        weights, step = ckpt.load_weights(run_dir)
        model.load_state_dict(weights, strict=True)
        state = ckpt.load_train_state(run_dir, step)
        if write:
            ckpt.truncate_metrics(run_dir, step)
    model.to(rt.device)
    if on_event:
        on_event(
            Start(
                total_steps(config.train, len(recipe.epoch_batches(0))),
                sum(p.numel() for p in model.parameters()),
                str(rt.device),
                dtype_name(rt.dtype),
                state["step"] if state else 0,
                config.train.max_time,
            )
        )

    def save(train_state: dict[str, Any]) -> None:
        if write:
            ckpt.save_run(run_dir, config, model, tokenizer, train_state["step"], train_state)

    steps, seen = (state["step"], state["seen"]) if state else (0, 0)
    interrupted = 0
    diverged: NonFinite | None = None
    allowed = config.train.skip_nonfinite
    log = tracking.Log(run_dir, config.train.log_to, write)
    keep_best = config.train.keep_best
    best = ckpt.best_score(run_dir) if keep_best and resume else None
    for event in train_loop(model, config.train, recipe, save, rt, state):
        steps = event.step
        events: list[StepLog | Interrupted | NonFinite | TrainWarning | Any] = [event]
        if isinstance(event, StepLog):
            seen = event.tokens_seen
            # the largest norm of the window: a spike between logs warns too
            norms = event.group_norms_max or event.group_norms
            warnings = grad_warnings(event.step, norms, config.train.explode_threshold)
            events += [TrainWarning(m, event.step) for m in warnings]
        elif isinstance(event, EvalLog) and keep_best:
            score = selection_score(event.metrics, config.train.best_by)
            if score is not None and (best is None or score < best):
                best = score
                if write:
                    ckpt.save_best(run_dir, model, config.kind, event.step, score)
        elif isinstance(event, Interrupted):
            interrupted = event.signal
        elif isinstance(event, NonFinite):
            if event.skipped:
                events = [TrainWarning(nonfinite_message(event, allowed), event.step)]
            else:
                diverged = event
        for e in events:
            log(record(e))
            if on_event:
                on_event(e)
    log.close()
    if diverged:
        raise TrainingError(diverged_message(diverged, allowed, run_dir))
    if keep_best:  # the test pass (and every later load) sees the best weights
        dist.barrier(rt.ranks)
        if (run_dir / ckpt.BEST).is_file():
            weights, _ = ckpt.load_weights(run_dir, ckpt.BEST)
            model.load_state_dict(weights, strict=True)
    records = ckpt.read_metrics(run_dir)
    if write:
        plot_curves(run_dir, records, keep_best, config.train.best_by)
    return Outcome(steps, seen, interrupted, records)


def nonfinite_message(event: NonFinite, allowed: int) -> str:
    where = f" of task {', '.join(event.tasks)}" if event.tasks else ""
    text = f"step {event.step}: the loss{where} is {event.value}"
    if event.skipped:
        return f"{text}; step skipped, no update ({event.skipped} of {allowed} allowed)"
    return text + (f" after {allowed} skipped steps" if allowed else "")


def diverged_message(event: NonFinite, allowed: int, run_dir: Path) -> str:
    """Why a run stopped on a non-finite loss, and how to go on."""
    return f"{nonfinite_message(event, allowed)}; " + (
        f"the last good checkpoint (step {event.saved}) is in {run_dir}: "
        "continue it with --resume (add --skip-nonfinite N to step over bad batches) "
        "or start again with a lower --lr"
        if event.saved is not None
        else "nothing was saved: start again with a lower --lr or --skip-nonfinite N"
    )


def read_report(run_dir: Path) -> dict[str, Any]:
    """Re-read a finished or interrupted run: its evaluations, test results and gradient
    norms; rewrites the plots in report/."""
    config = ckpt.read_config(run_dir)
    records = ckpt.read_metrics(run_dir)
    if not records:
        raise CheckpointError(f"{run_dir} has no metrics.jsonl records yet; nothing to report")
    summary_path = run_dir / ckpt.SUMMARY
    try:
        summary = json.loads(summary_path.read_text("utf-8")) if summary_path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{summary_path} is corrupt ({e}); delete it and rerun") from None
    test = summary.get("test", {})
    plot_error = None
    try:  # a read-only run folder: the tables are still shown, the plots said not rewritten
        plot_curves(run_dir, records, config.train.keep_best, config.train.best_by)
        for t, m in test.items():
            if "confusion" not in m:  # a similarity task: its scatter needs the vectors again
                continue
            title = f"{t} ({summary['test_splits'][t]}, accuracy {m['accuracy']:.3f})"
            path = run_dir / "report" / f"confusion_{t}.png"
            plot_confusion(path, m["confusion"], m["label_names"], title)
    except (OSError, DiskFullError) as e:  # a read-only folder, a full disk
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        plot_error = f"plots in {run_dir / 'report'} not rewritten ({why})"
    return {
        "run": str(run_dir),
        "kind": config.kind,
        "tasks": [t.name for t in config.tasks],
        "steps": max(r["step"] for r in records),
        "interrupted": records[-1]["kind"] == "interrupted",
        "history": history_of(records),
        "test": test,
        "test_splits": summary.get("test_splits", {}),
        "grad_norms": grad_summary(records),
        "warnings": [r["message"] for r in records if r["kind"] == "warning"],
        "plot_error": plot_error,
    }
