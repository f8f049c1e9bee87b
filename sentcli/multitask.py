"""Multi-task training parts: task schedules, the weighted step loss, gradient-norm
warnings and their summary."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from sentcli.model import MultiTaskModel

Step = list[tuple[str, np.ndarray]]
"""One optimizer step: (task, row indices) for each batch it takes."""
VANISHING = 1e-7


def plan_steps(
    batches: dict[str, list[np.ndarray]],
    schedule: str,
    rng: np.random.Generator,
    temperature: float = 1.0,
) -> list[Step]:
    """The steps of one epoch. Every batch is used once; a task that runs out drops out.

    round-robin: one batch per step, tasks in turn. proportional: one batch per step from a
    task drawn with probability ∝ size^(1/temperature) among those left. joint: one batch of
    every task left per step (their losses are summed).
    """
    queues = {t: list(b) for t, b in batches.items() if b}
    steps: list[Step] = []
    if schedule == "joint":
        while queues:
            steps.append([(t, q.pop(0)) for t, q in queues.items()])
            queues = {t: q for t, q in queues.items() if q}
    elif schedule == "round-robin":
        while queues:
            for t in list(queues):
                steps.append([(t, queues[t].pop(0))])
            queues = {t: q for t, q in queues.items() if q}
    elif schedule == "proportional":
        sizes = {t: len(q) for t, q in queues.items()}
        while queues:
            names = list(queues)
            weights = np.array([sizes[t] ** (1.0 / temperature) for t in names])
            t = names[rng.choice(len(names), p=weights / weights.sum())]
            steps.append([(t, queues[t].pop(0))])
            if not queues[t]:
                del queues[t]
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return steps


TaskBatch = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]
"""(task, input ids, attention mask, labels)."""


def weighted_loss(
    model: nn.Module,
    batches: list[TaskBatch],
    weights: dict[str, float],
    shares: dict[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Σ weight[task] · loss(task) over a step's batches, and each task's unweighted loss.
    `shares` scales a task's mean loss into its part of a batch split over ranks (dist.share)."""
    losses = {}
    for task, ids, mask, y in batches:
        losses[task] = model(ids, mask, task, y)[1] * (shares or {}).get(task, 1.0)
    total = torch.stack([weights.get(t, 1.0) * loss for t, loss in losses.items()]).sum()
    return total, losses


class StepLoss(nn.Module):
    """A step's weighted loss as one forward call: DistributedDataParallel expects one
    forward per backward, also when a joint step runs every task through the trunk."""

    def __init__(self, model: MultiTaskModel, weights: dict[str, float]) -> None:
        super().__init__()
        self.model = model
        self.weights = weights

    def forward(
        self, batches: list[TaskBatch], shares: dict[str, float] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return weighted_loss(self.model, batches, self.weights, shares)


def grad_warnings(
    step: int, norms: dict[str, float], threshold: float, vanishing: float = VANISHING
) -> list[str]:
    """Warnings for groups whose gradient norm vanished, exploded or is not finite."""
    out = []
    for group, norm in norms.items():
        if not math.isfinite(norm):
            out.append(f"step {step}: gradient norm of {group} is {norm} (non-finite)")
        elif norm > threshold:
            out.append(
                f"step {step}: gradient norm of {group} is {norm:.3g} > {threshold:g} (exploding)"
            )
        elif norm < vanishing:
            out.append(
                f"step {step}: gradient norm of {group} is {norm:.3g} < {vanishing:g} (vanishing)"
            )
    return out


def grad_summary(records: list[dict[str, Any]]) -> list[tuple[str, float, float, float, float]]:
    """(group, first, last, min, max) gradient norm per group over the logged steps."""
    series: dict[str, list[float]] = {}
    for r in records:
        for group, norm in r.get("group_norms", {}).items():
            series.setdefault(group, []).append(norm)
    return [(g, v[0], v[-1], min(v), max(v)) for g, v in series.items()]
