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

import numpy as np
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
    log_norms: dict[str, list[float]] = field(default_factory=dict)
    """Per gradient group, [its norms summed since the last log, its steps, the largest]."""
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
    # The fused kernel: one call per group instead of a Python loop over the parameters (the
    # host cost of a small step), and it skips a step on the device when `found_inf` is set.
    trainable = [p for p in model.parameters() if p.requires_grad]
    fused = all(p.device.type in FUSED_DEVICES for p in trainable)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=fused or None)


FUSED_DEVICES = ("cpu", "cuda")
"""Devices whose AdamW has the fused kernel with `found_inf` (a skip decided on the device)."""


class GroupNorms:
    """Each parameter group's gradient norm and the global one, from one kernel over every
    gradient, then clipping: no host sync. The groups with a gradient change with a step's
    tasks (a head outside the step has none); each such set is indexed once."""

    def __init__(
        self, model: nn.Module, group_of: Callable[[str], str | None], device: torch.device
    ) -> None:
        named = list(model.named_parameters())
        groups = [group_of(n) for n, _ in named]
        self.groups = list(dict.fromkeys(g for g in groups if g is not None))
        none = len(self.groups)  # the slot of parameters in no group
        self.at = {
            id(p): none if g is None else self.groups.index(g)
            for (_, p), g in zip(named, groups, strict=True)
        }
        self.device = device
        self.patterns: dict[tuple[bool, ...], tuple[torch.Tensor, np.ndarray]] = {}

    def __call__(
        self, params: Sequence[torch.Tensor], clip: float
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, np.ndarray] | None] | None:
        """(the global norm, (each group's norm [groups], which groups had a gradient) or
        None without groups) of `params`' gradients before clipping them to `clip` (0: no
        clipping); None when no parameter has a gradient."""
        key = tuple(p.grad is not None for p in params)
        present = [p for p, has in zip(params, key, strict=True) if has]
        if not present:
            return None
        grads = [p.grad for p in present]
        # one kernel for every gradient's norm (what clip_grad_norm_ runs too)
        squares = torch.stack(torch._foreach_norm(grads)).float().square()  # type: ignore[arg-type]
        total = squares.sum().sqrt()
        if clip > 0:
            torch.nn.utils.clip_grads_with_norm_(present, clip, total)
        if not self.groups:
            return total, None
        pattern = self.patterns.get(key)
        if pattern is None:  # a new set of parameters with gradients (the step's tasks)
            idx = [self.at[id(p)] for p in present]
            has = np.zeros(len(self.groups) + 1, dtype=np.int64)
            has[idx] = 1
            pattern = (torch.tensor(idx, device=self.device), has[:-1])
            self.patterns[key] = pattern
        by_group = squares.new_zeros(len(self.groups) + 1).index_add_(0, pattern[0], squares)
        return total, (by_group[:-1].sqrt(), pattern[1])


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


def _nonfinite_steps(
    pending: list[tuple[int, list[str], torch.Tensor, np.ndarray | None]], d: dist.Dist
) -> list[tuple[int, tuple[int, str, list[str]]]]:
    """(position in `pending`, (step, value, tasks)) of every step among `pending` with a
    non-finite loss, in order, agreed over ranks; one host sync."""
    if not pending:
        return []
    flat = torch.cat([v.float() for _, _, v, _ in pending])
    finite = dist.all_min(torch.isfinite(flat).to(torch.uint8), d)
    rows = torch.stack([finite.float(), flat]).tolist()  # the one readback
    out, offset = [], 0
    for i, (step, names, values, _) in enumerate(pending):
        ok, got = rows[0][offset : offset + len(values)], rows[1][offset : offset + len(values)]
        offset += len(values)
        if not all(ok):
            bad = [j for j, good in enumerate(ok) if not good]
            local = [v for v in got if not math.isfinite(v)]
            value = str(local[0]) if local else "not finite"
            out.append((i, (step, value, [names[j] for j in bad if names[j]])))
    return out


class Window:
    """What the steps since the last log add up to: the train loss, each task's loss and each
    gradient group's norm (mean and max over the steps that had one). The sums stay on the
    device until a log, eval or save reads them (one sync); the step counts are the host's.
    With --skip-nonfinite a bad step adds zeros (`keep` false) and the check that finds it
    takes its counts back (`forget`)."""

    def __init__(self, groups: list[str], device: torch.device) -> None:
        self.groups, self.device = groups, device
        self.tasks: list[str] = []
        self.index: dict[tuple[str, ...], tuple[torch.Tensor, list[int]]] = {}
        self.loss = torch.zeros((), device=device)
        self.task_sum = torch.zeros(0, device=device)
        self.norm_sum = torch.zeros(len(groups), device=device)
        self.norm_max = torch.zeros(len(groups), device=device)
        self.steps, self.task_n = 0, list[int]()
        self.norm_n = np.zeros(len(groups), dtype=np.int64)

    def task_index(self, names: tuple[str, ...]) -> tuple[torch.Tensor, list[int]]:
        """The positions of a step's tasks, on the device and here (a new task extends)."""
        found = self.index.get(names)
        if found is None:
            for t in names:
                if t not in self.tasks:
                    self.tasks.append(t)
                    self.task_sum = torch.cat([self.task_sum, self.task_sum.new_zeros(1)])
                    self.task_n.append(0)
            at = [self.tasks.index(t) for t in names]
            found = self.index[names] = (torch.tensor(at, device=self.device), at)
        return found

    def add(
        self,
        loss: torch.Tensor,
        names: tuple[str, ...],
        values: torch.Tensor,
        norms: tuple[torch.Tensor, np.ndarray] | None,
        keep: torch.Tensor | None,
    ) -> None:
        """A step: its loss, its tasks' losses and (per group) its gradient norms [groups]
        with which groups had a gradient."""
        loss = loss.detach()
        if keep is not None:  # a skipped step adds zeros (NaN would poison the sums)
            loss, values = torch.where(keep, loss, 0.0), torch.where(keep, values, 0.0)
        self.loss += loss
        self.steps += 1
        if names:
            idx, at = self.task_index(names)
            self.task_sum.index_add_(0, idx, values.float())
            for i in at:
                self.task_n[i] += 1
        if norms is not None:
            by_group, has = norms
            if keep is not None:
                by_group = torch.where(keep, by_group, 0.0)
            self.norm_sum += by_group
            torch.maximum(self.norm_max, by_group, out=self.norm_max)
            self.norm_n += has

    def forget(self, names: list[str], has: np.ndarray | None) -> None:
        """Take back the counts of a skipped step (its sums were zeros)."""
        self.steps -= 1
        for t in names:
            if t:
                self.task_n[self.tasks.index(t)] -= 1
        if has is not None:
            self.norm_n -= has

    def read(
        self, d: dist.Dist
    ) -> tuple[float, int, dict[str, tuple[float, int]], dict[str, tuple[float, int, float]]]:
        """(loss sum, steps, {task: (loss sum, steps)}, {group: (norm sum, steps, max)}): the
        losses averaged over ranks; one host sync."""
        sums = dist.mean(torch.cat([self.loss[None], self.task_sum]), d)
        flat = torch.cat([sums, self.norm_sum, self.norm_max]).tolist()
        n_t, n_g = len(self.tasks), len(self.groups)
        loss, task_sums, norm_sums, maxes = (
            flat[0],
            flat[1 : 1 + n_t],
            flat[1 + n_t : 1 + n_t + n_g],
            flat[1 + n_t + n_g :],
        )
        tasks = {
            t: (task_sums[i], self.task_n[i]) for i, t in enumerate(self.tasks) if self.task_n[i]
        }
        norms = {
            g: (norm_sums[i], int(self.norm_n[i]), maxes[i])
            for i, g in enumerate(self.groups)
            if self.norm_n[i]
        }
        return loss, self.steps, tasks, norms

    def restore(self, state: TrainState) -> None:
        """The sums a saved state holds (a resumed run logs what an uninterrupted one does)."""
        self.loss.fill_(state.log_loss)
        self.steps = state.log_count
        for t, (total, n) in state.log_tasks.items():
            i = self.task_index((t,))[1][0]
            self.task_sum[i], self.task_n[i] = total, int(n)
        for g, (total, n, top) in state.log_norms.items():
            if g in self.groups:
                i = self.groups.index(g)
                self.norm_sum[i], self.norm_n[i], self.norm_max[i] = total, int(n), top

    def reset(self) -> None:
        for t in (self.loss, self.task_sum, self.norm_sum, self.norm_max):
            t.zero_()
        self.steps, self.task_n = 0, [0] * len(self.tasks)
        self.norm_n[:] = 0


Pending = list[tuple[int, list[str], torch.Tensor, np.ndarray | None]]
"""Losses not yet checked for NaN/inf: (step, task names, their losses, the groups that
had a gradient)."""


class _Loop:
    """The loop's moving parts: the optimizer, the scaler, the state and the accumulators.
    `train_loop` drives it; each method is one part of a step. A step makes no host sync:
    what it adds up stays on the device until a log, evaluation or save reads it."""

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
        self.total = total_steps(cfg, len(recipe.epoch_batches(0)))
        self.warmup = min(cfg.warmup, self.total // 2)
        self.state = TrainState.from_dict(saved_state) if saved_state else TrainState()
        recipe.on_epoch(self.state.freeze_epoch)
        self.optimizer = self._optimizer()
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=self.dtype == torch.float16)
        self.saved: int | None = None  # the step of the checkpoint on disk
        self.norms = GroupNorms(model, recipe.group_of, rt.device)
        self.window = Window(self.norms.groups, rt.device)
        self.pending: Pending = []
        self.notices: list[NonFinite] = []  # skipped steps found by the last check, to yield
        self.grad_norm = torch.zeros((), device=rt.device)
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
        self.window.restore(self.state)
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
        # every rank keeps the mean loss sums: a resume restores them
        loss, steps, tasks, norms = self.window.read(self.ranks)
        cpu_rng, cuda_rng = _rng_state(self.device)
        out: dict[str, Any] = {"optimizer": self.optimizer.state_dict()}
        out["scaler"] = self.scaler.state_dict()
        out |= asdict(s) | {"epoch": epoch, "batch": batch}
        out["elapsed"] = s.elapsed + time.perf_counter() - self.t0
        out |= {"log_loss": loss, "log_count": steps}
        out["log_tasks"] = {t: [total, n] for t, (total, n) in tasks.items()}
        out["log_norms"] = {g: [total, n, top] for g, (total, n, top) in norms.items()}
        out |= {"torch_rng": cpu_rng, "cuda_rng": cuda_rng, "python_rng": random.getstate()}
        if self.ranks.on:  # each rank's dropout stream, so a resumed run draws what it would
            out["rng_ranks"] = dist.gather_objects((cpu_rng, cuda_rng), self.ranks)
        carry = self.recipe.state_dict()
        if carry:
            out["carry"] = carry
        return out

    def unchecked(self) -> NonFinite | None:
        """Check the losses since the last check (one sync). Without --skip-nonfinite the
        first non-finite one stops the run; with it, skipped steps (their update was already
        skipped on the device) go to `notices`, and the first past the tolerance stops it."""
        pending, self.pending = self.pending, []
        s, allowed = self.state, self.cfg.skip_nonfinite
        for i, found in _nonfinite_steps(pending, self.ranks):
            if s.skipped >= allowed:
                return NonFinite(*found, self.saved)
            s.skipped += 1
            self.window.forget(pending[i][1], pending[i][3])
            self.notices.append(NonFinite(*found, self.saved, s.skipped))
        return None

    def drain(self) -> Iterator[NonFinite]:
        """The skipped steps found by the checks since the last drain."""
        notices, self.notices = self.notices, []
        yield from notices

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

    def step(self, batch: Any, lr: float) -> None:
        """Forward, backward and the update (skipped on the device, with --skip-nonfinite,
        when the loss is not finite; without it, the next check stops the run)."""
        s, cfg = self.state, self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        with autocast(self.device, self.dtype):
            loss, n_tokens, parts = self.recipe.loss(self.module, batch)
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        s.step += 1
        names = tuple(parts)
        values = torch.stack([v.detach() for v in parts.values()] or [loss.detach()])
        keep = None
        if cfg.skip_nonfinite:
            keep = dist.all_min(torch.isfinite(values).all().to(torch.uint8), self.ranks).bool()
            if self.optimizer.defaults["fused"]:
                self.optimizer.found_inf = (~keep).float()  # type: ignore[attr-defined]
            elif not bool(keep):  # no fused kernel here: decide on the host
                self.optimizer.zero_grad(set_to_none=True)
        self.scaler.unscale_(self.optimizer)
        norms = None
        measured = self.norms(self.params, cfg.grad_clip)
        if measured is not None:
            self.grad_norm, norms = measured
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.window.add(loss, names, values, norms, keep)
        self.pending.append(
            (s.step, list(names) or [""], values, None if norms is None else norms[1])
        )
        self.tokens += n_tokens
        s.seen += n_tokens

    def step_log(self, epoch: int, lr: float, now: float) -> StepLog:
        """The log of the steps since the last one (the loop's one host sync a log)."""
        s = self.state
        loss, steps, tasks, norms = self.window.read(self.ranks)
        return StepLog(
            s.step,
            epoch,
            loss / max(steps, 1),
            lr,
            float(self.grad_norm),
            self.tokens / max(now - self.t_log, 1e-9),
            s.seen,
            now - self.t0,
            {g: total / n for g, (total, n, _) in norms.items()},
            {t: total / n for t, (total, n) in tasks.items()},
            {g: top for g, (_, _, top) in norms.items()},
        )

    def reset_log(self, now: float) -> None:
        """A new log window from `now` (the time the last log was taken: what the caller
        spends on a log counts against the next window)."""
        self.window.reset()
        self.tokens, self.t_log = 0, now


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
    predates the bad step). With `skip_nonfinite` N > 0 a bad step's update is skipped on
    the device (the fused optimizer's `found_inf`), the check reports it, and the run stops
    at the check that finds more than N.
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
                    problem = loop.checked_save(epoch, i)
                    yield from loop.drain()
                    yield problem or Interrupted(s.step, stop)
                    return
                loop.step(batches[i], lr)
                if loop.log_due():
                    problem = loop.unchecked()
                    yield from loop.drain()
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
                    yield from loop.drain()
                    if problem:
                        yield problem
                        return
                if evaluating:
                    last_eval = s.step
                    event = loop.run_eval(epoch, (epoch, i + 1))
                    yield from loop.drain()
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
                yield from loop.drain()
                yield event
                if isinstance(event, NonFinite):
                    return
