"""The training loop (a generator of step and evaluation logs) and its small pure parts:
device and precision resolution, seeding, the LR schedule and the optimizer groups."""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from sentcli import dist
from sentcli.config import TrainConfig
from sentcli.errors import ConfigError


@dataclass
class StepLog:
    step: int
    epoch: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    tokens_seen: int
    elapsed: float
    group_norms: dict[str, float] = field(default_factory=dict)
    """Gradient norm per parameter group (before clipping), when `group_of` is given."""
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


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda, then mps, then cpu; an explicit device that is missing is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = plain fp32). `auto` takes bf16 where the hardware has it
    natively (recent GPUs; CPUs with AVX512-BF16/AMX, where bf16 matmuls are ~4x faster)."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on this device")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host → device without a sync: pinned memory and a non-blocking copy on CUDA."""
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def group_norms(model: nn.Module, group_of: Callable[[str], str]) -> dict[str, torch.Tensor]:
    """L2 norm of the gradients of each parameter group (groups without gradients left out)."""
    squares: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            squares.setdefault(group_of(name), []).append(p.grad.detach().float().pow(2).sum())
    return {g: torch.stack(v).sum().sqrt() for g, v in squares.items()}


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[dict[str, int]]:
    """Turn Ctrl-C / SIGTERM into a flag checked between steps, so a stop never lands in the
    middle of an optimizer update."""
    flag = {"stop": 0}  # the signal number once one arrived
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, int, dict[str, torch.Tensor]]]
"""(module, batch) → (loss to minimise, real tokens in the global batch, each task's loss)."""


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


def train_loop(
    model: nn.Module,
    cfg: TrainConfig,
    epoch_batches: Callable[[int], Sequence[Any]],
    loss_fn: LossFn,
    evaluate: Callable[[], dict[str, Any]],
    save: Callable[[dict[str, Any]], None],
    device: torch.device,
    state: dict[str, Any] | None = None,
    on_epoch: Callable[[int], bool] | None = None,
    group_of: Callable[[str], str] | None = None,
    step_module: nn.Module | None = None,
    ranks: dist.Dist | None = None,
    carry: tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None]] | None = None,
) -> Iterator[StepLog | EvalLog | Interrupted | NonFinite]:
    """Train `model`; yield a StepLog every `log_every` steps and an EvalLog per evaluation.

    `epoch_batches(e)` must be deterministic in `e` (resume skips into it by index) and the
    same on every rank; `loss_fn(module, batch)` runs `step_module` (default: `model`;
    wrapped in DistributedDataParallel under torchrun, compiled with --compile).
    `save(train_state)` persists the model and the train state (only the main rank writes;
    every rank calls it). `state` (from an earlier `save`) resumes a run. `on_epoch(e)` sets
    the trainable parameters for epoch e (gradual unfreezing) and says whether they changed;
    `group_of(name)` names parameter groups for per-group grad norms. `carry` = (snapshot,
    restore) keeps the caller's own accumulators (per-task train losses) in the train state.

    Non-finite losses are checked without a host sync per step: their flags are read at the
    next log or save, and the run stops there without saving (the last checkpoint on disk
    predates the bad step). With `skip_nonfinite` N > 0 every step is checked before its
    update (one sync per step) and up to N bad steps are skipped.
    """
    ranks = ranks or dist.Dist()
    dtype = resolve_precision(cfg.precision, device)
    total = total_steps(cfg, len(epoch_batches(0)))
    warmup = min(cfg.warmup, total // 2)
    freeze_epoch = state["freeze_epoch"] if state else 0
    if on_epoch:
        on_epoch(freeze_epoch)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.backbone_lr_scale)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step, epoch, start, seen, skipped = 0, 0, 0, 0, 0
    spent = 0.0  # seconds of training before this session (for --max-time)
    saved: int | None = None
    # Train loss summed since the last log, and over how many steps (saved for --resume, so
    # a resumed run logs the same averages as an uninterrupted one).
    loss_sum, n_acc = torch.zeros((), device=device), 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, start, seen = state["step"], state["epoch"], state["batch"], state["seen"]
        skipped, saved = state.get("skipped", 0), step
        spent = state.get("elapsed", 0.0)
        loss_sum.fill_(state["log_loss"])
        n_acc = state["log_count"]
        rngs = state.get("rng_ranks")
        cpu_rng, cuda_rng = rngs[ranks.rank] if rngs and len(rngs) == ranks.world else (
            state["torch_rng"], state.get("cuda_rng")
        )  # fmt: skip
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None and device.type == "cuda":
            torch.cuda.set_rng_state(cuda_rng, device)
        random.setstate(state["python_rng"])
        if carry and "carry" in state:
            carry[1](state["carry"])

    def train_state(epoch: int, batch: int) -> dict[str, Any]:
        dist.mean(loss_sum, ranks)  # every rank keeps the mean: a resume restores it everywhere
        cpu_rng, cuda_rng = _rng_state(device)
        out = {
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "epoch": epoch,
            "batch": batch,
            "seen": seen,
            "skipped": skipped,
            "elapsed": spent + time.perf_counter() - t0,
            "log_loss": loss_sum.item(),
            "log_count": n_acc,
            "freeze_epoch": freeze_epoch,
            "torch_rng": cpu_rng,
            "cuda_rng": cuda_rng,
            "python_rng": random.getstate(),
        }
        if ranks.on:  # each rank's dropout stream, so a resumed run draws what it would have
            out["rng_ranks"] = dist.gather_objects((cpu_rng, cuda_rng), ranks)
        if carry:
            out["carry"] = carry[0]()
        return out

    def unchecked() -> NonFinite | None:
        """The first non-finite loss since the last check, if any (the check is consumed)."""
        bad = _first_nonfinite(pending, ranks)
        pending.clear()
        return NonFinite(*bad, saved) if bad else None

    def checked_save(epoch: int, batch: int) -> NonFinite | None:
        """Save unless a loss since the last check was not finite (then report it)."""
        nonlocal saved
        problem = unchecked()
        if problem is None:
            save(train_state(epoch, batch))
            saved = step
        return problem

    def run_eval(epoch: int, resume_at: tuple[int, int]) -> EvalLog | NonFinite:
        """Evaluate during `epoch` (0-based) and save; `resume_at` = (epoch, batch) to
        continue from. Weights after a non-finite loss are neither evaluated nor saved."""
        problem = unchecked()
        if problem is not None:
            return problem
        model.eval()
        metrics = evaluate()
        model.train()
        checked_save(*resume_at)
        return EvalLog(step, epoch, metrics)

    if step >= total:
        return
    base = step_module if step_module is not None else model

    def wrapped() -> nn.Module:
        module = dist.wrap(base, ranks, device)
        return torch.compile(module) if cfg.compile else module  # type: ignore[return-value]

    runner = wrapped()
    params = [p for p in model.parameters() if p.requires_grad]
    clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    pending: list[tuple[int, list[str], torch.Tensor]] = []  # losses not yet checked
    grad_norm, norms = torch.zeros((), device=device), {}
    model.train()
    t0 = t_log = time.perf_counter()
    tokens, last_eval = 0, -1
    with deferred_interrupts() as flag:
        for epoch in range(epoch, cfg.epochs):
            batches = epoch_batches(epoch)
            if on_epoch and epoch != freeze_epoch:
                freeze_epoch = epoch
                if on_epoch(epoch):  # new trainable set: new optimizer, same moments
                    old = optimizer
                    optimizer = make_optimizer(
                        model, cfg.lr, cfg.weight_decay, cfg.backbone_lr_scale
                    )
                    optimizer.state.update({p: old.state[p] for p in old.state})
                    params = [p for p in model.parameters() if p.requires_grad]
                    runner = wrapped()  # DDP registers the trainable set when it wraps
            for i in range(start, len(batches)):
                used = spent + time.perf_counter() - t0
                # One small CPU all-reduce a step under torchrun: a signal seen by any rank
                # stops all, and every rank follows the slowest clock (for --max-time).
                stop, used_ms = dist.agree_max([flag["stop"], int(used * 1000)], ranks)
                used = used_ms / 1000 if ranks.on else used
                if stop:
                    yield checked_save(epoch, i) or Interrupted(step, stop)
                    return
                # With --max-time the schedule follows the clock: the cosine reaches its end
                # when the time is up (or at the last step, whichever comes first).
                clock = used / cfg.max_time if cfg.max_time else 0.0
                lr = get_lr(step, cfg.lr, warmup, total, cfg.lr * cfg.min_lr_ratio, clock)
                if cfg.max_time and used >= cfg.max_time:
                    total = step + 1  # this step is the last: evaluate, save, stop
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                with autocast(device, dtype):
                    loss, n_tokens, parts = loss_fn(runner, batches[i])
                scaler.scale(loss).backward()
                step += 1
                names = list(parts) or [""]
                values = torch.stack([v.detach() for v in parts.values()] or [loss.detach()])
                update = True
                if cfg.skip_nonfinite:
                    bad = _first_nonfinite([(step, names, values)], ranks)
                    if bad:
                        optimizer.zero_grad(set_to_none=True)
                        if skipped >= cfg.skip_nonfinite:
                            yield NonFinite(*bad, saved)
                            return
                        skipped += 1
                        update = False
                        yield NonFinite(*bad, saved, skipped)
                else:
                    pending.append((step, names, values))
                log_now = step % cfg.log_every == 0 or step == total
                if update:
                    scaler.unscale_(optimizer)
                    norms = group_norms(model, group_of) if group_of and log_now else {}
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    loss_sum += loss.detach()
                    n_acc += 1
                else:
                    norms = {}
                tokens += n_tokens
                seen += n_tokens
                if log_now:
                    problem = unchecked()
                    if problem is not None:
                        yield problem
                        return
                    now = time.perf_counter()  # .item() below is the loop's only host sync
                    log = StepLog(
                        step,
                        epoch,
                        dist.mean(loss_sum, ranks).item() / max(n_acc, 1),
                        lr,
                        grad_norm.item(),
                        tokens / max(now - t_log, 1e-9),
                        seen,
                        now - t0,
                        {g: v.item() for g, v in norms.items()},
                    )
                    try:
                        yield log
                    except GeneratorExit:  # the caller stopped listening: keep a resumable state
                        checked_save(epoch, i + 1)
                        return
                    loss_sum.zero_()
                    n_acc, tokens, t_log = 0, 0, now
                evaluating = (cfg.eval_every and step % cfg.eval_every == 0) or step == total
                if cfg.save_every and step % cfg.save_every == 0 and not evaluating:
                    problem = checked_save(epoch, i + 1)  # evaluations save anyway
                    if problem:
                        yield problem
                        return
                if evaluating:
                    last_eval = step
                    event = run_eval(epoch, (epoch, i + 1))
                    try:
                        yield event
                    except GeneratorExit:
                        return
                    if isinstance(event, NonFinite):
                        return
                if step >= total:
                    return
            start = 0
            if not cfg.eval_every and last_eval != step:
                last_eval = step
                event = run_eval(epoch, (epoch + 1, 0))
                yield event
                if isinstance(event, NonFinite):
                    return
