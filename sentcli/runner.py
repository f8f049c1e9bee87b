"""The run-folder side of training: drive the training loop, write checkpoints, metrics,
warnings, plots and the summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tokenizers import Tokenizer

from sentcli import checkpoint as ckpt
from sentcli import dist
from sentcli.config import RunConfig
from sentcli.errors import TrainingError
from sentcli.metrics import plot_grad_norms, plot_losses
from sentcli.multitask import grad_warnings
from sentcli.train import (
    EvalLog,
    Interrupted,
    NonFinite,
    StepLog,
    resolve_precision,
    total_steps,
    train_loop,
)

Event = StepLog | EvalLog | Interrupted | NonFinite | dict[str, Any]
"""What `on_event` callbacks receive: the loop's logs, and dicts with a "kind" (start,
init, groups, warning, eval_only, progress)."""
OnEvent = Callable[[Event], None] | None


def run_training(
    run_dir: Path,
    config: RunConfig,
    model: nn.Module,
    tokenizer: Tokenizer,
    loop_args: dict[str, Any],
    resume: bool,
    on_event: OnEvent,
) -> tuple[int, int, int, list[dict[str, Any]]]:
    """Drive train_loop, writing metrics.jsonl and checkpoints.

    `loop_args` holds device, epoch_batches, loss_fn and evaluate (and optionally ranks,
    step_module, on_epoch, group_of). Returns the steps done, the tokens seen, the signal
    that interrupted the run (0: none) and every metrics record of the run (the whole
    metrics.jsonl, earlier sessions of a resumed run included). Under torchrun only the main
    rank writes. A non-finite loss raises TrainingError (the last checkpoint stays).
    """
    ranks: dist.Dist = loop_args.get("ranks") or dist.Dist()
    write = ranks.main
    state = None
    if resume:
        weights, step = ckpt.load_weights(run_dir)
        model.load_state_dict(weights, strict=True)
        state = ckpt.load_train_state(run_dir, step)
        if write:
            ckpt.truncate_metrics(run_dir, step)
    device = loop_args["device"]
    model.to(device)
    if on_event:
        on_event(
            {
                "kind": "start",
                "total_steps": total_steps(config.train, len(loop_args["epoch_batches"](0))),
                "parameters": sum(p.numel() for p in model.parameters()),
                "device": str(device),
                "precision": dtype_name(resolve_precision(config.train.precision, device)),
                "resumed_at": state["step"] if state else 0,
                "max_time": config.train.max_time,
            }
        )

    def save(train_state: dict[str, Any]) -> None:
        if write:
            ckpt.save_run(run_dir, config, model, tokenizer, train_state["step"], train_state)

    steps, seen = (state["step"], state["seen"]) if state else (0, 0)
    interrupted = 0
    diverged: NonFinite | None = None
    for event in train_loop(model, config.train, save=save, state=state, **loop_args):
        steps = event.step
        events: list[Any] = [event]
        if isinstance(event, StepLog):
            seen = event.tokens_seen
            warnings = grad_warnings(event.step, event.group_norms, config.train.explode_threshold)
            events += [{"kind": "warning", "step": event.step, "message": m} for m in warnings]
        elif isinstance(event, Interrupted):
            interrupted = event.signal
        elif isinstance(event, NonFinite):
            message = nonfinite_message(event, config.train.skip_nonfinite)
            if event.skipped:
                events = [{"kind": "warning", "step": event.step, "message": message}]
            else:
                diverged = event
        for e in events:
            if write:
                ckpt.append_metrics(run_dir, e if isinstance(e, dict) else asdict(e))
            if on_event:
                on_event(e)
    if diverged:
        raise TrainingError(
            f"{nonfinite_message(diverged, config.train.skip_nonfinite)}; "
            + (
                f"the last good checkpoint (step {diverged.saved}) is in {run_dir}: "
                "continue it with --resume (add --skip-nonfinite N to step over bad batches) "
                "or start again with a lower --lr"
                if diverged.saved is not None
                else "nothing was saved: start again with a lower --lr or --skip-nonfinite N"
            )
        )
    records = ckpt.read_metrics(run_dir)
    if write:
        plot_curves(run_dir, records)
    return steps, seen, interrupted, records


def nonfinite_message(event: NonFinite, allowed: int) -> str:
    where = f" of task {', '.join(event.tasks)}" if event.tasks else ""
    text = f"step {event.step}: the loss{where} is {event.value}"
    if event.skipped:
        return f"{text}; step skipped, no update ({event.skipped} of {allowed} allowed)"
    return text + (f" after {allowed} skipped steps" if allowed else "")


def plot_curves(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """report/losses.png and report/grad_norms.png from a run's metrics records."""
    history = history_of(records)
    curves = {"train": [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]}
    for key in sorted({k for h in history for k in h if k.endswith("loss")}):
        curves[key.replace("/", " ")] = [
            (h["step"], h[key]) for h in history if h.get(key) is not None
        ]
    (run_dir / "report").mkdir(exist_ok=True)
    plot_losses(run_dir / "report" / "losses.png", curves)
    if any(r.get("group_norms") for r in records):
        plot_grad_norms(run_dir / "report" / "grad_norms.png", records)


def history_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluations of a metrics log, flattened: step, epoch and the metrics."""
    return [
        {"step": r["step"], "epoch": r["epoch"], **r["metrics"]}
        for r in records
        if r["kind"] == "eval"
    ]


def throughput(
    records: list[dict[str, Any]], flops_per_token: float, device: torch.device
) -> dict[str, Any]:
    """Training speed for the summary: the median tokens/s of the logged windows (robust to
    the windows that held an evaluation or compilation), the model FLOP/s it implies and,
    on CUDA, the peak memory allocated."""
    rates = sorted(r["tokens_per_s"] for r in records if r["kind"] == "train")
    if not rates:
        return {}
    tps = rates[len(rates) // 2]
    out: dict[str, Any] = {
        "tokens_per_s": tps,
        "flops_per_token": flops_per_token,
        "model_flops_per_s": tps * flops_per_token,
    }
    if device.type == "cuda":
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    return out


def dtype_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")  # type: ignore[arg-type]


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    (run_dir / "report").mkdir(exist_ok=True)
    ckpt.write_text(run_dir / "report" / "summary.json", json.dumps(summary, indent=2) + "\n")
