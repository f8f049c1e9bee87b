"""The generic training loop: a generator of step and evaluation logs that knows nothing of
the objective. A `Recipe` (training/lm.py, training/multitask.py, …) gives it batches, the
loss, the evaluation and its own resumable state; `TrainState` is where the loop stands."""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from types import FrameType
from typing import Any, Protocol

import torch
import torch.nn as nn

from sentcli import dist, heap
from sentcli.config import TrainConfig
from sentcli.device import autocast
from sentcli.events import EvalLog, Interrupted, LoopEvent, NonFinite, StepLog


class Recipe(Protocol):
    """What one training objective gives the loop. `epoch_batches(e)` must be deterministic
    in `e` (a resumed run skips into it by index) and the same on every rank."""

    def step_module(self) -> nn.Module:
        """The module `loss` runs (wrapped in DDP under torchrun, compiled with --compile)."""
        ...

    def epoch_batches(self, epoch: int) -> Sequence[Any]: ...

    def loss(
        self, module: nn.Module, batch: Any
    ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        """(loss to minimise, real tokens in the global batch, each task's loss)."""
        ...

    def evaluate(self) -> dict[str, Any]:
        """Validation metrics (the model is in eval mode)."""
        ...

    def on_epoch(self, epoch: int) -> bool:
        """Set the trainable parameters for `epoch`; say whether they changed."""
        ...

    def group_of(self, name: str) -> str | None:
        """The gradient-norm group of a parameter (None: no per-group norms)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The recipe's own accumulators, saved in the train state for --resume."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainState:
    """Where the loop stands; saved with the optimizer and RNG states in train_state.pt."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    """The next batch of `epoch` to run."""
    seen: int = 0
    """Real tokens trained on."""
    skipped: int = 0
    """Steps skipped for a non-finite loss (--skip-nonfinite)."""
    elapsed: float = 0.0
    """Seconds of training so far, earlier sessions included (--max-time)."""
    log_loss: float = 0.0
    """Train loss summed since the last log, and over how many steps: a resumed run then
    logs the same averages as an uninterrupted one."""
    log_count: int = 0
    log_tasks: dict[str, list[float]] = field(default_factory=dict)
    """Per task, [its train loss summed since the last log, its steps]: the same for the
    per-task averages."""
    freeze_epoch: int = 0
    """The epoch whose trainable set is in force (gradual unfreezing)."""

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TrainState:
        """From a saved train state (runs written before `skipped`/`elapsed` existed too)."""
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})


def get_lr(
    step: int, lr: float, warmup: int, total: int, min_lr: float, clock: float = 0.0
) -> float:
    """Linear warmup to `lr` over `warmup` steps, then cosine decay to `min_lr` at `total`.
    `clock` (the share of --max-time used) moves the decay on when it is ahead of the steps."""
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    ratio = max((step - warmup) / max(1, total - warmup), clock)
    if ratio >= 1.0:
        return min_lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    total = steps_per_epoch * cfg.epochs
    return min(total, cfg.max_steps) if cfg.max_steps else total


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0
) -> torch.optim.AdamW:
    """AdamW over trainable parameters only; matrices and embeddings decay, biases and
    LayerNorm gains do not. Trunk groups carry `lr_scale` = `backbone_lr_scale`."""
    groups = []
    for trunk in (True, False):
        params = [
            p
            for n, p in model.named_parameters()
            if p.requires_grad and n.startswith("trunk.") == trunk
        ]
        scale = backbone_lr_scale if trunk else 1.0
        groups += [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        groups[-2]["lr_scale"] = groups[-1]["lr_scale"] = scale
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def group_norms(model: nn.Module, group_of: Callable[[str], str | None]) -> dict[str, torch.Tensor]:
    """L2 norm of the gradients of each parameter group (groups without gradients, and
    parameters in no group, left out)."""
    squares: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        group = group_of(name)
        if p.grad is not None and group is not None:
            squares.setdefault(group, []).append(p.grad.detach().float().pow(2).sum())
    return {g: torch.stack(v).sum().sqrt() for g, v in squares.items()}


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[dict[str, int]]:
    """Turn Ctrl-C / SIGTERM into a flag checked between steps, so a stop never lands in the
    middle of an optimizer update."""
    flag = {"stop": 0}  # the signal number once one arrived
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        flag["stop"] = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _first_nonfinite(
    pending: list[tuple[int, list[str], torch.Tensor]], d: dist.Dist
) -> tuple[int, str, list[str]] | None:
    """(step, value, tasks) of the first non-finite loss among `pending` (step, task names,
    their losses), agreed over ranks; one host sync."""
    if not pending:
        return None
    flat = torch.cat([v for _, _, v in pending])
    finite = dist.all_min(torch.isfinite(flat).to(torch.uint8), d).cpu().bool()
    if bool(finite.all()):
        return None
    offset = 0
    for step, names, values in pending:
        ok = finite[offset : offset + len(values)]
        offset += len(values)
        if not bool(ok.all()):
            bad = [i for i, good in enumerate(ok.tolist()) if not good]
            local = [v for v in values.float().cpu().tolist() if not math.isfinite(v)]
            value = str(local[0]) if local else "not finite"
            return step, value, [names[i] for i in bad if names[i]]
    return None


Pending = list[tuple[int, list[str], torch.Tensor]]
"""Losses not yet checked for NaN/inf: (step, task names, their losses)."""


class _Loop:
    """The loop's moving parts: the optimizer, the scaler, the state and the accumulators.
    `train_loop` drives it; each method is one part of a step."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        recipe: Recipe,
        save: Callable[[dict[str, Any]], None],
        rt: dist.Runtime,
        saved_state: dict[str, Any] | None,
    ) -> None:
        self.model, self.cfg, self.recipe, self.save = model, cfg, recipe, save
        self.device, self.ranks, self.dtype = rt.device, rt.ranks, rt.dtype
        device = rt.device
        self.total = total_steps(cfg, len(recipe.epoch_batches(0)))
        self.warmup = min(cfg.warmup, self.total // 2)
        self.state = TrainState.from_dict(saved_state) if saved_state else TrainState()
        recipe.on_epoch(self.state.freeze_epoch)
        self.optimizer = self._optimizer()
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.saved: int | None = None  # the step of the checkpoint on disk
        self.loss_sum = torch.zeros((), device=device)  # train loss since the last log
        # each task's train loss and steps since the last log (summed on the device)
        self.task_sums: dict[str, torch.Tensor] = {}
        self.task_steps: dict[str, int] = {}
        self.pending: Pending = []
        self.grad_norm = torch.zeros((), device=device)
        self.norms: dict[str, torch.Tensor] = {}
        self.tokens = 0  # real tokens since the last log
        self.t0 = self.t_log = time.perf_counter()
        if saved_state is not None:
            self._restore(saved_state)

    def _optimizer(self) -> torch.optim.AdamW:
        c = self.cfg
        return make_optimizer(self.model, c.lr, c.weight_decay, c.backbone_lr_scale)

    def _restore(self, saved: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        self.saved = self.state.step
        self.loss_sum.fill_(self.state.log_loss)
        for t, (total, n) in self.state.log_tasks.items():
            self.task_sums[t] = torch.full((), total, device=self.device)
            self.task_steps[t] = int(n)
        rngs = saved.get("rng_ranks")
        cpu_rng, cuda_rng = (
            rngs[self.ranks.rank]
            if rngs and len(rngs) == self.ranks.world
            else (saved["torch_rng"], saved.get("cuda_rng"))
        )
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(cuda_rng, self.device)
        random.setstate(saved["python_rng"])
        if "carry" in saved:
            self.recipe.load_state_dict(saved["carry"])

    def start(self) -> None:
        """Wrap the step module and start the clocks (once the run has steps to do)."""
        self.module = self._wrapped()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.model.train()
        self.t0 = self.t_log = time.perf_counter()

    def _wrapped(self) -> nn.Module:
        module = dist.wrap(self.recipe.step_module(), self.ranks, self.device)
        return torch.compile(module) if self.cfg.compile else module  # type: ignore[return-value]

    def new_epoch(self, epoch: int) -> None:
        """Gradual unfreezing: a new trainable set gets a new optimizer with the same moments."""
        if epoch == self.state.freeze_epoch:
            return
        self.state.freeze_epoch = epoch
        if self.recipe.on_epoch(epoch):
            old = self.optimizer
            self.optimizer = self._optimizer()
            self.optimizer.state.update({p: old.state[p] for p in old.state})
            self.params = [p for p in self.model.parameters() if p.requires_grad]
            self.module = self._wrapped()  # DDP registers the trainable set when it wraps

    def snapshot(self, epoch: int, batch: int) -> dict[str, Any]:
        """The train state to save, resuming at `batch` of `epoch`."""
        s = self.state
        dist.mean(self.loss_sum, self.ranks)  # every rank keeps the mean: a resume restores it
        cpu_rng, cuda_rng = _rng_state(self.device)
        out: dict[str, Any] = {"optimizer": self.optimizer.state_dict()}
        out["scaler"] = self.scaler.state_dict()
        out |= asdict(s) | {"epoch": epoch, "batch": batch}
        out["elapsed"] = s.elapsed + time.perf_counter() - self.t0
        out["log_loss"] = self.loss_sum.item()
        out["log_tasks"] = {
            t: [dist.mean(v, self.ranks).item(), self.task_steps[t]]
            for t, v in self.task_sums.items()
        }
        out |= {"torch_rng": cpu_rng, "cuda_rng": cuda_rng, "python_rng": random.getstate()}
        if self.ranks.on:  # each rank's dropout stream, so a resumed run draws what it would
            out["rng_ranks"] = dist.gather_objects((cpu_rng, cuda_rng), self.ranks)
        carry = self.recipe.state_dict()
        if carry:
            out["carry"] = carry
        return out

    def unchecked(self) -> NonFinite | None:
        """The first non-finite loss since the last check, if any (the check is consumed)."""
        bad = _first_nonfinite(self.pending, self.ranks)
        self.pending.clear()
        return NonFinite(*bad, self.saved) if bad else None

    def checked_save(self, epoch: int, batch: int) -> NonFinite | None:
        """Save unless a loss since the last check was not finite (then report it)."""
        problem = self.unchecked()
        if problem is None:
            self.save(self.snapshot(epoch, batch))
            self.saved = self.state.step
        return problem

    def run_eval(self, epoch: int, resume_at: tuple[int, int]) -> EvalLog | NonFinite:
        """Evaluate during `epoch` (0-based) and save; `resume_at` = (epoch, batch) to
        continue from. Weights after a non-finite loss are neither evaluated nor saved."""
        problem = self.unchecked()
        if problem is not None:
            return problem
        self.model.eval()
        metrics = self.recipe.evaluate()
        self.model.train()
        self.checked_save(*resume_at)
        return EvalLog(self.state.step, epoch, metrics)

    def clock(self, stop_flag: int) -> tuple[int, float]:
        """(the stop signal agreed over ranks, 0 if none; this step's learning rate). With
        --max-time the schedule follows the clock and the step at the limit is the last."""
        used = self.state.elapsed + time.perf_counter() - self.t0
        # One small CPU all-reduce a step under torchrun: a signal seen by any rank stops
        # all, and every rank follows the slowest clock (for --max-time).
        stop, used_ms = dist.agree_max([stop_flag, int(used * 1000)], self.ranks)
        used = used_ms / 1000 if self.ranks.on else used
        cfg, step = self.cfg, self.state.step
        fraction = used / cfg.max_time if cfg.max_time else 0.0
        lr = get_lr(step, cfg.lr, self.warmup, self.total, cfg.lr * cfg.min_lr_ratio, fraction)
        if cfg.max_time and used >= cfg.max_time:
            self.total = step + 1  # this step is the last: evaluate, save, stop
        return stop, lr

    def log_due(self) -> bool:
        return self.state.step % self.cfg.log_every == 0 or self.state.step == self.total

    def step(self, batch: Any, lr: float) -> tuple[NonFinite | None, bool]:
        """Forward, backward and (unless the loss is not finite) the update. Returns a
        skipped step's event and whether the run must stop."""
        s, cfg = self.state, self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        with autocast(self.device, self.dtype):
            loss, n_tokens, parts = self.recipe.loss(self.module, batch)
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        s.step += 1
        names = list(parts) or [""]
        values = torch.stack([v.detach() for v in parts.values()] or [loss.detach()])
        event = None
        if cfg.skip_nonfinite:  # check now, before the update (one sync per step)
            bad = _first_nonfinite([(s.step, names, values)], self.ranks)
            if bad:
                self.optimizer.zero_grad(set_to_none=True)
                if s.skipped >= cfg.skip_nonfinite:
                    return NonFinite(*bad, self.saved), True
                s.skipped += 1
                event = NonFinite(*bad, self.saved, s.skipped)
        else:  # checked at the next log or save: no host sync per step
            self.pending.append((s.step, names, values))
        self.norms = {}
        if event is None:
            self.scaler.unscale_(self.optimizer)
            if self.log_due():
                self.norms = group_norms(self.model, self.recipe.group_of)
            clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.loss_sum += loss.detach()
            s.log_count += 1
            for t, v in parts.items():
                if t not in self.task_sums:
                    self.task_sums[t] = torch.zeros((), device=self.device)
                    self.task_steps[t] = 0
                self.task_sums[t] += v.detach().float()
                self.task_steps[t] += 1
        self.tokens += n_tokens
        s.seen += n_tokens
        return event, False

    def step_log(self, epoch: int, lr: float, now: float) -> StepLog:
        """The log of the steps since the last one (the loop's only host sync)."""
        s = self.state
        loss = dist.mean(self.loss_sum, self.ranks).item() / max(s.log_count, 1)
        names = list(self.task_sums)
        sums = torch.stack([self.task_sums[t] for t in names]) if names else None
        means = [] if sums is None else dist.mean(sums, self.ranks).tolist()
        return StepLog(
            s.step,
            epoch,
            loss,
            lr,
            self.grad_norm.item(),
            self.tokens / max(now - self.t_log, 1e-9),
            s.seen,
            now - self.t0,
            {g: v.item() for g, v in self.norms.items()},
            {t: m / self.task_steps[t] for t, m in zip(names, means, strict=True)},
        )

    def reset_log(self, now: float) -> None:
        """A new log window from `now` (the time the last log was taken: what the caller
        spends on a log counts against the next window)."""
        self.loss_sum.zero_()
        self.task_sums, self.task_steps = {}, {}
        self.state.log_count, self.tokens, self.t_log = 0, 0, now


def train_loop(
    model: nn.Module,
    cfg: TrainConfig,
    recipe: Recipe,
    save: Callable[[dict[str, Any]], None],
    rt: dist.Runtime,
    state: dict[str, Any] | None = None,
) -> Iterator[LoopEvent]:
    """Train `model`; yield a StepLog every `log_every` steps and an EvalLog per evaluation.

    `save(train_state)` persists the model and the train state (only the main rank writes;
    every rank calls it). `state` (from an earlier `save`) resumes a run.

    Non-finite losses are checked without a host sync per step: their flags are read at the
    next log or save, and the run stops there without saving (the last checkpoint on disk
    predates the bad step). With `skip_nonfinite` N > 0 every step is checked before its
    update (one sync per step) and up to N bad steps are skipped.
    """
    loop = _Loop(model, cfg, recipe, save, rt, state)
    s = loop.state
    if s.step >= loop.total:
        return
    if rt.device.type == "cpu":
        heap.keep_freed()
    loop.start()
    start, last_eval = s.batch, -1
    with deferred_interrupts() as flag:
        for epoch in range(s.epoch, cfg.epochs):
            batches = recipe.epoch_batches(epoch)
            loop.new_epoch(epoch)
            for i in range(start, len(batches)):
                stop, lr = loop.clock(flag["stop"])
                if stop:
                    yield loop.checked_save(epoch, i) or Interrupted(s.step, stop)
                    return
                skipped, fatal = loop.step(batches[i], lr)
                if skipped is not None:
                    yield skipped
                    if fatal:
                        return
                if loop.log_due():
                    problem = loop.unchecked()
                    if problem is not None:
                        yield problem
                        return
                    now = time.perf_counter()
                    try:
                        yield loop.step_log(epoch, lr, now)
                    except GeneratorExit:  # the caller stopped listening: keep a resumable state
                        loop.checked_save(epoch, i + 1)
                        return
                    loop.reset_log(now)
                evaluating = (cfg.eval_every and s.step % cfg.eval_every == 0) or (
                    s.step == loop.total
                )
                if cfg.save_every and s.step % cfg.save_every == 0 and not evaluating:
                    problem = loop.checked_save(epoch, i + 1)  # evaluations save anyway
                    if problem:
                        yield problem
                        return
                if evaluating:
                    last_eval = s.step
                    event = loop.run_eval(epoch, (epoch, i + 1))
                    try:
                        yield event
                    except GeneratorExit:
                        return
                    if isinstance(event, NonFinite):
                        return
                if s.step >= loop.total:
                    return
            start = 0
            if not cfg.eval_every and last_eval != s.step:
                last_eval = s.step
                event = loop.run_eval(epoch, (epoch + 1, 0))
                yield event
                if isinstance(event, NonFinite):
                    return
