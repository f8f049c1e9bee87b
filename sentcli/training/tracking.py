"""Where a run's logs go: metrics.jsonl always (the source of truth), and with `--log-to
tensorboard` the same numbers as TensorBoard scalars in RUN/tensorboard/ (torch's
SummaryWriter; the `tensorboard` extra), for a live view while the run trains."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sentcli import checkpoint as ckpt
from sentcli.errors import ConfigError

TRACKERS = ("tensorboard",)
TENSORBOARD = "tensorboard"
"""The run folder's TensorBoard log folder (`tensorboard --logdir RUN/tensorboard`)."""


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record's numbers as TensorBoard tags: train/loss, train/lr,
    train/tokens_per_s, train/loss/TASK, grad_norm/GROUP (mean and max over the log
    window), and each evaluation metric as eval/TASK/NAME; other records have none."""
    out: dict[str, float] = {}
    if record.get("kind") == "train":
        for key in ("loss", "lr", "tokens_per_s", "grad_norm"):
            if isinstance(record.get(key), int | float):
                out[f"train/{key}"] = float(record[key])
        for task, value in (record.get("task_losses") or {}).items():
            out[f"train/loss/{task}"] = float(value)
        for group, value in (record.get("group_norms") or {}).items():
            out[f"grad_norm/{group}/mean"] = float(value)
        for group, value in (record.get("group_norms_max") or {}).items():
            out[f"grad_norm/{group}/max"] = float(value)
    elif record.get("kind") == "eval":
        for key, value in (record.get("metrics") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out["eval/" + key.replace("@", "/at")] = float(value)
    return {k: v for k, v in out.items() if math.isfinite(v)}


class Log:
    """metrics.jsonl, and the tracker `log_to` names ("" for none). `write` False (a
    torchrun rank other than the main one): nothing is written."""

    def __init__(self, run_dir: Path, log_to: str, write: bool = True) -> None:
        self.run_dir, self.write, self.board = run_dir, write, None
        if log_to and log_to not in TRACKERS:
            raise ConfigError(f"--log-to {log_to}: use {', '.join(TRACKERS)}")
        if log_to == "tensorboard" and write:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "--log-to tensorboard needs the tensorboard package: "
                    "pip install 'sentcli[tensorboard]'"
                ) from None
            self.board = SummaryWriter(log_dir=str(run_dir / TENSORBOARD))

    def __call__(self, record: dict[str, Any]) -> None:
        if not self.write:
            return
        ckpt.append_metrics(self.run_dir, record)
        if self.board is not None and "step" in record:
            for tag, value in scalars(record).items():
                self.board.add_scalar(tag, value, int(record["step"]))
            self.board.flush()  # a live view: each log shows at once

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
