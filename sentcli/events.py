"""What the library reports while it works: one small dataclass per event. Library code
passes them to an `on_event` callback; the CLI renders them (a `match` on the class), and
training writes the loop's events to metrics.jsonl (`record`)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StepLog:
    """The train loss averaged since the last log, every `log_every` steps."""

    step: int
    epoch: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    tokens_seen: int
    elapsed: float
    group_norms: dict[str, float] = field(default_factory=dict)
    """Gradient norm per parameter group (before clipping), when the recipe names groups:
    the mean over the steps since the last log where the group had a gradient."""
    task_losses: dict[str, float] = field(default_factory=dict)
    """Each task's train loss, averaged over its steps since the last log (multi-task runs;
    a task that took no step in the window is absent)."""
    group_norms_max: dict[str, float] = field(default_factory=dict)
    """The largest gradient norm of each group since the last log (`group_norms` holds the
    mean over the steps where the group had a gradient): a spike between logs shows."""
    kind: str = "train"


@dataclass
class EvalLog:
    step: int
    epoch: int
    metrics: dict[str, Any] = field(default_factory=dict)
    kind: str = "eval"


@dataclass
class Interrupted:
    """Training stopped early (Ctrl-C / SIGTERM); a resumable state was saved at `step`."""

    step: int
    signal: int = int(signal.SIGINT)
    """The signal that stopped it (SIGINT 2, SIGTERM 15): the CLI exits with 128 + it."""
    kind: str = "interrupted"


@dataclass
class NonFinite:
    """A loss that was NaN or infinite: the run stopped (nothing after `saved` was written),
    or with --skip-nonfinite the step was skipped (no update)."""

    step: int
    value: str
    """nan, inf or -inf (or "not finite" when only another rank saw it)."""
    tasks: list[str]
    """The tasks whose loss it was (empty for a language model's single loss)."""
    saved: int | None
    """The step of the last checkpoint on disk (None: none yet)."""
    skipped: int = 0
    """Steps skipped so far (with --skip-nonfinite); 0 when the run stopped."""
    kind: str = "nonfinite"


LoopEvent = StepLog | EvalLog | Interrupted | NonFinite
"""What the training loop yields."""


@dataclass
class TrainWarning:
    """Something the user should know (a gradient norm out of range, a skipped step, flags a
    resumed run ignores); `step` is None when it is not about a step."""

    message: str
    step: int | None = None


@dataclass
class Start:
    """Training is about to start."""

    total_steps: int
    parameters: int
    device: str
    precision: str
    resumed_at: int
    max_time: float


@dataclass
class InitFrom:
    """The weights taken from an --init run."""

    run: str
    tensors: int
    parameters: int
    heads_kept: list[str]
    heads_new: list[str]


@dataclass
class Groups:
    """The parameter groups and whether each trains, under the --freeze spec."""

    groups: list[tuple[str, int, bool]]
    freeze: str


@dataclass
class EvalOnly:
    """--freeze all: nothing trains, the run evaluated the model as it is."""


@dataclass
class TextsRead:
    """build-tokenizer: texts read so far."""

    texts: int


@dataclass
class InferStart:
    """embed/predict: the model is loaded and the input checked."""

    total: int | None
    model: str
    origin: str
    device: str
    precision: str


@dataclass
class IndexProgress:
    """index build: rows added to the graph so far, of `total`."""

    done: int
    total: int


@dataclass
class InferWarning:
    """embed/search/similarity: something the user should know (one line)."""

    message: str


@dataclass
class InferProgress:
    """embed/predict: rows done so far."""

    done: int


Event = (
    LoopEvent
    | TrainWarning
    | Start
    | InitFrom
    | Groups
    | EvalOnly
    | TextsRead
    | InferStart
    | InferProgress
    | InferWarning
    | IndexProgress
)
OnEvent = Callable[[Event], None] | None


def record(event: LoopEvent | TrainWarning) -> dict[str, Any]:
    """The metrics.jsonl line of a loop event or a step's warning."""
    if isinstance(event, TrainWarning):
        return {"kind": "warning", "step": event.step, "message": event.message}
    return asdict(event)
