"""Rendering: progress bars and event lines on stderr, result lines and tables on stdout."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from sentcli.cli._util import err, out
from sentcli.events import (
    EvalLog,
    EvalOnly,
    Event,
    Groups,
    IndexProgress,
    InferProgress,
    InferStart,
    InferWarning,
    InitFrom,
    Interrupted,
    Start,
    StepLog,
    TextsRead,
    TrainWarning,
)

if TYPE_CHECKING:  # the api imports torch: --help and --version stay free of it
    from sentcli.api import InferenceResult, TrainResult


def progress(quiet: bool, count: str = "{task.completed}/{task.total}") -> Progress:
    """A bar on stderr (only on a terminal); `count` formats the done/total column."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn(count),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet or not err.is_terminal,  # no bars (nor their stray newline) in logs
        transient=True,
    )


TABLE_CLASSES = 12


def confusion_table(title: str, confusion: list[list[int]], label_names: list[str]) -> Table:
    """Rows true, columns predicted; each cell count and row-normalised rate. Above
    TABLE_CLASSES classes, only the largest (by true count) are shown, and an `other` column
    counts the predictions of the rest; the full matrix is in --json and summary.json."""
    n = len(label_names)
    keep = sorted(range(n), key=lambda i: -sum(confusion[i]))[:TABLE_CLASSES]
    keep.sort()
    if n > TABLE_CLASSES:
        title += f" (the {TABLE_CLASSES} largest of {n} classes; all of them: --json)"
    table = Table(title=title, title_justify="left")
    table.add_column("true \\ predicted", style="bold")
    for i in keep:
        table.add_column(label_names[i], justify="right")
    if n > TABLE_CLASSES:
        table.add_column("other", justify="right")
    for i in keep:
        row, total = confusion[i], max(sum(confusion[i]), 1)
        cells = [row[j] for j in keep] + (
            [total - sum(row[j] for j in keep)] if n > len(keep) else []
        )
        table.add_row(label_names[i], *(f"{c} ({c / total:.0%})" for c in cells))
    return table


def human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


class TrainView:
    """Renders training events: a progress bar on stderr, one result line per evaluation on
    stdout (through `eval_line`), warnings and the interruption notice."""

    def __init__(self, bar: Progress, eval_line: Callable[[EvalLog, float | None], str]) -> None:
        self.bar = bar
        self.eval_line = eval_line
        self.task: TaskID | None = None
        self.last_loss: float | None = None

    def __call__(self, event: Event) -> None:
        match event:
            case InitFrom():
                out.print(init_line(event))
            case Start():
                resumed = f", resuming at step {event.resumed_at}" if event.resumed_at else ""
                budget = f" (or {event.max_time:g} s)" if event.max_time else ""
                err.print(
                    f"training {human(event.parameters)} parameters on {event.device} "
                    f"({event.precision}) for {event.total_steps:,} steps{budget}{resumed}"
                )
                self.task = self.bar.add_task(
                    "training", total=event.total_steps, completed=event.resumed_at, info=""
                )
            case StepLog():
                self.last_loss = event.loss
                info = f"loss {event.loss:.3f} | {human(event.tokens_per_s)} tok/s"
                if self.task is not None:
                    self.bar.update(self.task, completed=event.step, info=info)
            case EvalLog():
                out.print(self.eval_line(event, self.last_loss))
            case Groups():
                out.print(groups_table(event.groups, event.freeze))
            case TrainWarning():
                err.print(f"[yellow]warning:[/] {escape(event.message)}")
            case EvalOnly():
                out.print("--freeze all: nothing trains; evaluated the model as it is")
            case Interrupted():
                err.print(
                    f"interrupted at step {event.step}; the state is saved: rerun the same "
                    "command with --resume to continue"
                )


def init_line(event: InitFrom) -> str:
    heads = ""
    if event.heads_kept:
        heads += f"; kept the heads of {', '.join(event.heads_kept)}"
    if event.heads_new:
        heads += f"; new heads for {', '.join(event.heads_new)}"
    return (
        f"initialised from {event.run}: loaded {event.tensors} trunk tensors "
        f"({human(event.parameters)} parameters){heads}"
    )


class TokenizerView:
    """build-tokenizer: a bar counting the texts read."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task = bar.add_task("reading texts", total=None, info="")

    def __call__(self, event: Event) -> None:
        if isinstance(event, TextsRead):
            self.bar.update(self.task, completed=event.texts)


class InferenceView:
    """Renders embed/predict events: a progress bar on stderr (with a total when the input's
    size is known up front)."""

    def __init__(self, quiet: bool) -> None:
        self.bar = progress(quiet, "{task.completed:,}")  # stdin has no total
        self.task: TaskID | None = None
        self.index_task: TaskID | None = None
        self.warned: set[str] = set()  # search embeds corpus and queries: say it once

    def __call__(self, event: Event) -> None:
        match event:
            case InferStart():
                self.task = self.bar.add_task("texts", total=event.total, info="")
            case InferProgress() if self.task is not None:
                self.bar.update(self.task, completed=event.done)
            case IndexProgress():
                if self.index_task is None:
                    self.index_task = self.bar.add_task("graph", total=event.total, info="")
                self.bar.update(self.index_task, completed=event.done)
            case InferWarning() if event.message not in self.warned:  # shown even with --quiet
                self.warned.add(event.message)
                err.print(f"[yellow]warning:[/] {escape(event.message)}")


SCORES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "spearman": "Spearman×100",
    "pearson": "Pearson×100",
    "recall@1": "recall@1",
    "mrr": "MRR",
    "cosine": "cos to teacher",
}
"""Each task kind's scores (metric key → name), in the order tables show them."""
PERCENT = ("spearman", "pearson")  # shown ×100, as the STS literature does


def score(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if key in PERCENT else f"{value:.4f}"


def task_names(metrics: dict[str, Any]) -> list[str]:
    return [k[: -len("/val_loss")] for k in metrics if k.endswith("/val_loss")]


def classifier_eval_line(event: EvalLog, train_loss: float | None) -> str:
    """One line per evaluation of a task run; epoch 0 is before any training."""
    parts = [f"epoch {event.epoch + 1:>2} step {event.step:>6}"]
    for t in task_names(event.metrics):
        m = {k.split("/", 1)[1]: v for k, v in event.metrics.items() if k.startswith(t + "/")}
        train = f"train loss {m['train_loss']:.4f} | " if m.get("train_loss") is not None else ""
        scores = "".join(f" | {name} {score(k, m[k])}" for k, name in SCORES.items() if k in m)
        parts.append(f"{t}: {train}val loss {m['val_loss']:.4f}{scores}")
    return " | ".join(parts)


def lm_eval_line(event: EvalLog, train_loss: float | None) -> str:
    m = event.metrics
    train = ""
    if train_loss is not None:
        train = f"train loss {train_loss:.4f} ppl {math.exp(min(train_loss, 50.0)):.1f} | "
    return f"step {event.step:>6} | {train}val loss {m['val_loss']:.4f} ppl {m['val_ppl']:.1f}"


def groups_table(groups: list[tuple[str, int, bool]], freeze: str) -> Table:
    table = Table(title=f"parameter groups (--freeze {freeze})", title_justify="left")
    table.add_column("group")
    table.add_column("parameters", justify="right")
    table.add_column("state")
    for name, n, trainable in groups:
        table.add_row(name, f"{n:,}", "trainable" if trainable else "[dim]frozen[/]")
    return table


def loss_table(history: list[dict[str, Any]], tasks: list[str]) -> Table:
    """The per-task loss table: per evaluation (epoch 0 = before training; the step tells
    evaluations within an epoch apart), a row per task."""
    table = Table(title="per-task losses and scores (validation)", title_justify="left")
    shown = [k for k in SCORES if any(f"{t}/{k}" in h for h in history for t in tasks)]
    columns = ["epoch", "step", "task", "train loss", "val loss", *(SCORES[k] for k in shown)]
    for col in columns:
        table.add_column(col, justify="left" if col == "task" else "right")
    for h in history:
        for i, t in enumerate(tasks):
            cells = [str(h["epoch"] + 1), str(h["step"])] if i == 0 else ["", ""]
            cells.append(t)
            for key in ("train_loss", "val_loss", *shown):
                cells.append(score(key, h.get(f"{t}/{key}")))
            table.add_row(*cells, end_section=i == len(tasks) - 1)
    return table


def grad_table(rows: list[tuple[str, float, float, float, float]]) -> Table:
    table = Table(title="gradient norms per group (logged steps)", title_justify="left")
    for col in ("group", "first", "last", "min", "max"):
        table.add_column(col, justify="right" if col != "group" else "left")
    for group, *values in rows:
        table.add_row(group, *(f"{v:.3g}" for v in values))
    return table


def lm_table(history: list[dict[str, Any]]) -> Table:
    table = Table(title="evaluations", title_justify="left")
    for col in ("step", "val loss", "val ppl"):
        table.add_column(col, justify="right")
    for h in history:
        table.add_row(str(h["step"]), f"{h['val_loss']:.4f}", f"{h['val_ppl']:.1f}")
    return table


def per_class_table(title: str, per_class: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("label", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for name, m in per_class.items():
        table.add_row(
            name,
            f"{m['precision']:.4f}",
            f"{m['recall']:.4f}",
            f"{m['f1']:.4f}",
            f"{m['support']:,}",
        )
    return table


def print_test_results(test: dict[str, Any], splits: dict[str, str]) -> None:
    """Per task: accuracy, macro-F1 and the confusion matrix on its test (or validation)
    split; a similarity task's scores."""
    for t, m in test.items():
        split = splits[t]
        if "confusion" not in m:
            scores = " | ".join(f"{name} {score(k, m[k])}" for k, name in SCORES.items() if k in m)
            rows = f"{m['pairs']:,} {'texts' if m['kind'] in ('text', 'distill') else 'pairs'}"
            line = f"{scores} | " if scores else ""
            out.print(f"{t} {split}: {line}val loss {m['val_loss']:.4f} | {rows}")
            continue
        n = sum(map(sum, m["confusion"]))
        out.print(
            f"{t} {split}: accuracy {m['accuracy']:.4f} | macro-F1 {m['macro_f1']:.4f} | "
            f"{n:,} texts"
        )
        out.print(confusion_table(f"{t} confusion ({split})", m["confusion"], m["label_names"]))


def inference_summary(verb: str, result: InferenceResult, quiet: bool) -> None:
    """The throughput line (unless --quiet) and the truncated and blank counts (always) on
    stderr."""
    s = result.stats
    if s.truncated:
        err.print(
            f"[yellow]warning:[/] {s.truncated:,} of {s.texts:,} texts were longer than "
            f"{result.max_length} tokens and were cut to that length (--max-length)"
        )
    if s.blank:
        err.print(
            f"[yellow]warning:[/] {s.blank:,} of {s.texts:,} texts were blank (empty or "
            "whitespace); each still has its row, in input order"
        )
    if quiet:
        return
    secs = max(s.seconds, 1e-9)
    where = f" → {result.output}" if result.output else ""
    model = result.origin if result.origin == "the default model" else str(result.model)
    err.print(
        f"{verb} {s.texts:,} text{'s' if s.texts != 1 else ''} ({s.tokens:,} tokens) in "
        f"{s.seconds:.1f} s: {s.texts / secs:,.0f} texts/s, {s.tokens / secs:,.0f} tokens/s "
        f"({escape(model)}, {result.device}, {result.precision}){escape(where)}"
    )


def throughput_line(result: TrainResult, quiet: bool) -> None:
    """Training speed on stderr: real tokens/s, the model FLOP/s they imply, peak GPU memory."""
    t = result.throughput
    if quiet or not t:
        return
    memory = (
        f", peak GPU memory {t['peak_memory_bytes'] / 2**30:.2f} GiB"
        if "peak_memory_bytes" in t
        else ""
    )
    err.print(
        f"throughput: {human(t['tokens_per_s'])} tokens/s (median of the logged windows), "
        f"{t['model_flops_per_s'] / 1e12:.3g} TFLOP/s of model FLOPs{memory}"
    )


def finish_training(result: TrainResult, quiet: bool) -> None:
    """An interrupted run exits 128 + its signal (130 Ctrl-C, 143 SIGTERM; the state is
    saved); a finished one prints its throughput line and, with --keep-best, which
    evaluation's weights it kept."""
    if result.interrupted:
        raise typer.Exit(128 + result.interrupted)
    throughput_line(result, quiet)
    train = result.config.train
    if train.keep_best:
        from sentcli.api import kept_step

        best = kept_step(result)
        if best is None:
            err.print(
                f"--keep-best: no evaluation during training had a finite --best-by "
                f"{train.best_by} score; the last weights stand"
            )
        else:
            err.print(
                f"kept the weights of step {best[0]} ({best[1]}, --best-by {train.best_by}) "
                "in best.safetensors; the test pass and later loads use them"
            )
