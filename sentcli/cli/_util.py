"""What the commands share: option types, error mapping, consoles, progress and tables."""

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import fields
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sentcli.config import ModelConfig, TrainConfig
from sentcli.errors import SentcliError

# Under torchrun only rank 0 speaks (every rank runs the same command).
_SILENT = os.environ.get("RANK", "0") != "0"
out = Console(highlight=False, soft_wrap=True, quiet=_SILENT)
err = Console(stderr=True, highlight=False, soft_wrap=True, quiet=_SILENT)
F = TypeVar("F", bound=Callable[..., Any])


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class InferPrecision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    int8 = "int8"


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


TRAIN = "Training"
MODEL = "Model size"
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", exists=True, dir_okay=False, help="JSON or TOML file of options; flags win."
    ),
]
DeviceOpt = Annotated[Device | None, typer.Option(help="\\[default: auto]", rich_help_panel=TRAIN)]
PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(help="Autocast dtype \\[default: auto: bf16 where native]", rich_help_panel=TRAIN),
]
SeedOpt = Annotated[int | None, typer.Option(help="\\[default: 1337]", rich_help_panel=TRAIN)]
BatchOpt = Annotated[int | None, typer.Option(help="\\[default: 32]", rich_help_panel=TRAIN)]
EpochsOpt = Annotated[int | None, typer.Option(help="\\[default: 1]", rich_help_panel=TRAIN)]
MaxStepsOpt = Annotated[
    int | None, typer.Option(help="Stop after N steps (0: all epochs)", rich_help_panel=TRAIN)
]
MaxTimeOpt = Annotated[
    float | None,
    typer.Option(
        help="Stop after this many seconds; the LR schedule follows the clock (0: no limit)",
        rich_help_panel=TRAIN,
    ),
]
LrOpt = Annotated[
    float | None, typer.Option(help="Peak LR \\[default: 1e-3]", rich_help_panel=TRAIN)
]
WarmupOpt = Annotated[
    int | None, typer.Option(help="Warmup steps \\[default: 100]", rich_help_panel=TRAIN)
]
WdOpt = Annotated[float | None, typer.Option(help="\\[default: 0.1]", rich_help_panel=TRAIN)]
ClipOpt = Annotated[float | None, typer.Option(help="\\[default: 1.0]", rich_help_panel=TRAIN)]
EvalEveryOpt = Annotated[
    int | None, typer.Option(help="Evaluate every N steps (0: per epoch)", rich_help_panel=TRAIN)
]
LogEveryOpt = Annotated[
    int | None,
    typer.Option(help="Log train loss every N steps \\[default: 10]", rich_help_panel=TRAIN),
]
SaveEveryOpt = Annotated[
    int | None,
    typer.Option(help="Also checkpoint every N steps (0: at evaluations)", rich_help_panel=TRAIN),
]
SkipNonfiniteOpt = Annotated[
    int | None,
    typer.Option(
        help="Skip up to N steps whose loss is NaN/inf (0: stop at the first)",
        rich_help_panel=TRAIN,
    ),
]
CompileOpt = Annotated[
    bool | None,
    typer.Option("--compile/--no-compile", help="torch.compile the step", rich_help_panel=TRAIN),
]
ValFracOpt = Annotated[
    float | None,
    typer.Option(
        help="Held-out share without a validation split \\[default: 0.1]", rich_help_panel=TRAIN
    ),
]
NLayerOpt = Annotated[int | None, typer.Option(help="\\[default: 4]", rich_help_panel=MODEL)]
NHeadOpt = Annotated[int | None, typer.Option(help="\\[default: 4]", rich_help_panel=MODEL)]
NEmbdOpt = Annotated[int | None, typer.Option(help="\\[default: 256]", rich_help_panel=MODEL)]
BlockOpt = Annotated[
    int | None, typer.Option(help="Max tokens per text \\[default: 128]", rich_help_panel=MODEL)
]
DropoutOpt = Annotated[float | None, typer.Option(help="\\[default: 0.1]", rich_help_panel=MODEL)]
AttnDropoutOpt = Annotated[
    float | None,
    typer.Option(help="On attention probabilities \\[default: 0]", rich_help_panel=MODEL),
]
OutputDir = Annotated[
    Path, typer.Option("--output", "-o", file_okay=False, help="Run folder to write.")
]
TextColOpt = Annotated[
    str | None, typer.Option(help="Text column (default: text/sentence/review/content).")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in --output.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing, non-empty --output.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def config_options(values: dict[str, Any]) -> dict[str, Any]:
    """The config-dataclass settings among a command's parameters (call with `locals()`):
    those the user gave (not None), enum members as their values."""
    keys = {f.name for f in fields(ModelConfig)} | {f.name for f in fields(TrainConfig)}
    return {
        k: (v.value if isinstance(v, Enum) else v)
        for k, v in values.items()
        if k in keys and v is not None
    }


def debug_enabled() -> bool:
    return os.environ.get("SENTCLI_DEBUG", "") not in ("", "0")


def handle_errors(fn: F) -> F:
    """SentcliError → one line on stderr, exit 2 (1 for TrainingError); anything else →
    exit 1 (traceback only with --debug or SENTCLI_DEBUG=1); Ctrl-C outside training → 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SentcliError as e:
            if debug_enabled():
                raise
            err.print(f"[bold red]error:[/] {escape(str(e))}")
            raise typer.Exit(e.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`sentcli embed big.txt | head`): stop quietly, and point
            # stdout at /dev/null so the interpreter's final flush does not complain.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as e:
            if debug_enabled():
                raise
            err.print(
                f"[bold red]error:[/] unexpected {type(e).__name__}: {escape(str(e))} "
                "(rerun with --debug for the traceback, and please report it)"
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


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


def confusion_table(title: str, confusion: list[list[int]], label_names: list[str]) -> Table:
    """Rows true, columns predicted; each cell count and row-normalised rate."""
    table = Table(title=title, title_justify="left")
    table.add_column("true \\ predicted", style="bold")
    for name in label_names:
        table.add_column(name, justify="right")
    for name, row in zip(label_names, confusion, strict=True):
        total = max(sum(row), 1)
        table.add_row(name, *(f"{c} ({c / total:.0%})" for c in row))
    return table


def human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


class TrainView:
    """Renders training events: a progress bar on stderr, one result line per evaluation on
    stdout (through `eval_line`), and the interruption notice."""

    def __init__(self, bar: Progress, eval_line: Callable[[Any, float | None], str]) -> None:
        self.bar = bar
        self.eval_line = eval_line
        self.task: Any = None
        self.last_loss: float | None = None

    def __call__(self, event: Any) -> None:
        kind = event["kind"] if isinstance(event, dict) else event.kind
        if kind == "init":
            heads = ""
            if event["heads_kept"]:
                heads += f"; kept the heads of {', '.join(event['heads_kept'])}"
            if event["heads_new"]:
                heads += f"; new heads for {', '.join(event['heads_new'])}"
            out.print(
                f"initialised from {event['run']}: loaded {event['tensors']} trunk tensors "
                f"({human(event['parameters'])} parameters){heads}"
            )
        elif kind == "start":
            resumed = f", resuming at step {event['resumed_at']}" if event["resumed_at"] else ""
            budget = f" (or {event['max_time']:g} s)" if event.get("max_time") else ""
            err.print(
                f"training {human(event['parameters'])} parameters on {event['device']} "
                f"({event['precision']}) for {event['total_steps']:,} steps{budget}{resumed}"
            )
            self.task = self.bar.add_task(
                "training", total=event["total_steps"], completed=event["resumed_at"], info=""
            )
        elif kind == "train":
            self.last_loss = event.loss
            info = f"loss {event.loss:.3f} | {human(event.tokens_per_s)} tok/s"
            self.bar.update(self.task, completed=event.step, info=info)
        elif kind == "eval":
            out.print(self.eval_line(event, self.last_loss))
        elif kind == "groups":
            out.print(groups_table(event["groups"], event["freeze"]))
        elif kind == "warning":
            err.print(f"[yellow]warning:[/] {escape(event['message'])}")
        elif kind == "eval_only":
            out.print("--freeze all: nothing trains; evaluated the model as it is")
        elif kind == "interrupted":
            err.print(
                f"interrupted at step {event.step}; the state is saved: rerun the same command "
                "with --resume to continue"
            )


def task_names(metrics: dict[str, Any]) -> list[str]:
    return [k[: -len("/accuracy")] for k in metrics if k.endswith("/accuracy")]


def classifier_eval_line(event: Any, train_loss: float | None) -> str:
    """One line per evaluation of a classifier run; epoch 0 is before any training."""
    parts = [f"epoch {event.epoch + 1:>2} step {event.step:>6}"]
    for t in task_names(event.metrics):
        m = {k.split("/", 1)[1]: v for k, v in event.metrics.items() if k.startswith(t + "/")}
        train = f"train loss {m['train_loss']:.4f} | " if m.get("train_loss") is not None else ""
        parts.append(
            f"{t}: {train}val loss {m['val_loss']:.4f} | accuracy {m['accuracy']:.4f} | "
            f"macro-F1 {m['macro_f1']:.4f}"
        )
    return " | ".join(parts)


def groups_table(groups: list[tuple[str, int, bool]], freeze: str) -> Table:
    table = Table(title=f"parameter groups (--freeze {freeze})", title_justify="left")
    table.add_column("group")
    table.add_column("parameters", justify="right")
    table.add_column("state")
    for name, n, trainable in groups:
        table.add_row(name, f"{n:,}", "trainable" if trainable else "[dim]frozen[/]")
    return table


def loss_table(history: list[dict[str, Any]], tasks: list[str]) -> Table:
    """The per-task loss table: per evaluation (epoch 0 = before training), a row per task."""
    table = Table(title="per-task losses and scores (validation)", title_justify="left")
    for col in ("epoch", "task", "train loss", "val loss", "accuracy", "macro-F1"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for h in history:
        for i, t in enumerate(tasks):
            cells = [str(h["epoch"] + 1) if i == 0 else "", t]
            for key in ("train_loss", "val_loss", "accuracy", "macro_f1"):
                v = h.get(f"{t}/{key}")
                cells.append("-" if v is None else f"{v:.4f}")
            table.add_row(*cells, end_section=i == len(tasks) - 1)
    return table


def grad_table(rows: list[Any]) -> Table:
    table = Table(title="gradient norms per group (logged steps)", title_justify="left")
    for col in ("group", "first", "last", "min", "max"):
        table.add_column(col, justify="right" if col != "group" else "left")
    for group, *values in rows:
        table.add_row(group, *(f"{v:.3g}" for v in values))
    return table


def print_test_results(test: dict[str, Any], splits: dict[str, str]) -> None:
    """Per task: accuracy, macro-F1 and the confusion matrix on its test (or validation) split."""
    for t, m in test.items():
        split = splits[t]
        n = sum(map(sum, m["confusion"]))
        out.print(
            f"{t} {split}: accuracy {m['accuracy']:.4f} | macro-F1 {m['macro_f1']:.4f} | "
            f"{n:,} texts"
        )
        out.print(confusion_table(f"{t} confusion ({split})", m["confusion"], m["label_names"]))


class InferenceView:
    """Renders embed/predict events: a progress bar on stderr (with a total when the input's
    size is known up front)."""

    def __init__(self, quiet: bool) -> None:
        self.bar = progress(quiet, "{task.completed:,}")  # stdin has no total
        self.task: Any = None

    def __call__(self, event: Any) -> None:
        if event["kind"] == "infer_start":
            self.task = self.bar.add_task("texts", total=event["total"], info="")
        elif event["kind"] == "progress":
            self.bar.update(self.task, completed=event["done"])


def inference_summary(verb: str, result: Any, quiet: bool) -> None:
    """The throughput line (unless --quiet) and the truncation count (always) on stderr."""
    s = result.stats
    if s.truncated:
        err.print(
            f"[yellow]warning:[/] {s.truncated:,} of {s.texts:,} texts were longer than "
            f"{result.max_length} tokens and were cut to that length (--max-length)"
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


def throughput_line(result: Any, quiet: bool) -> None:
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
