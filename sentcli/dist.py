"""Data parallelism under torchrun: the process group, each rank's share of a batch, and the
few collectives training and inference need (loss means, agreed stops, gathered rows).

Without torchrun (no WORLD_SIZE above 1 in the environment) every helper is a no-op, so the
training code has one path. `--batch-size` stays the global batch: every rank takes a strided
share of each batch, so N processes train like one process with the same batch.
"""

from __future__ import annotations

import atexit
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as td
import torch.nn as nn

from sentcli.device import resolve_device, resolve_precision
from sentcli.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Only the main rank prints, writes and saves."""
        return self.rank == 0


_control: Any = None  # a gloo group for small CPU messages (stop flags), also beside NCCL


def from_env() -> Dist:
    """This process's place, from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group once (NCCL on CUDA, gloo on CPU); on CUDA each rank takes the
    GPU of its LOCAL_RANK. Returns this rank and the device it trains on."""
    global _control
    d = from_env()
    if not d.on:
        return d, device
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"torchrun runs on cuda or cpu, not {device.type}; use --device cpu")
    if not td.is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
        _control = td.new_group(backend="gloo")
        atexit.register(td.destroy_process_group)
    return d, device


@dataclass(frozen=True)
class Runtime:
    """Where a command computes, resolved once and passed down: the device (under torchrun
    this rank's GPU), the autocast dtype (None: fp32) and the processes."""

    device: torch.device
    dtype: torch.dtype | None
    ranks: Dist


def runtime(device: str, precision: str) -> Runtime:
    """`--device` and `--precision` resolved, the process group joined (under torchrun)."""
    ranks, dev = setup(resolve_device(device))
    return Runtime(dev, resolve_precision(precision, dev), ranks)


def barrier(d: Dist) -> None:
    if d.on:
        td.barrier(group=_control)


def shard(rows: np.ndarray, d: Dist) -> np.ndarray:
    """This rank's rows of a global batch (strided: length-sorted batches stay balanced)."""
    return rows[d.rank :: d.world] if d.on else rows


def share(rows: np.ndarray, d: Dist) -> float:
    """The factor that turns this rank's mean loss into its part of the global batch mean
    (DDP averages gradients over ranks, and shards of an odd-sized batch differ in size)."""
    return len(shard(rows, d)) * d.world / len(rows) if d.on else 1.0


def usable(rows: np.ndarray, d: Dist) -> bool:
    """Every rank needs at least one row of a batch (a batch smaller than the world is
    dropped under torchrun)."""
    return len(rows) >= d.world


def mean(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean of `t` over ranks (in place, returned)."""
    if d.on:
        td.all_reduce(t, op=td.ReduceOp.SUM)
        t /= d.world
    return t


def total(values: list[float], d: Dist) -> list[float]:
    """Elementwise sums of small host values over ranks."""
    if not d.on:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    td.all_reduce(t, op=td.ReduceOp.SUM, group=_control)
    return t.tolist()


def agree_max(values: list[int], d: Dist) -> list[int]:
    """The largest of every rank's values, elementwise, over the CPU control group: no
    device sync."""
    if not d.on:
        return values
    t = torch.tensor(values, dtype=torch.int64)
    td.all_reduce(t, op=td.ReduceOp.MAX, group=_control)
    return t.tolist()


def all_min(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.on:
        td.all_reduce(t, op=td.ReduceOp.MIN)
    return t


def gather_rows(local: np.ndarray, n: int, d: Dist) -> np.ndarray:
    """Reassemble the strided shards of `n` rows (rank r holds rows r, r + world, …)."""
    if not d.on:
        return local
    parts: list[Any] = [None] * d.world
    td.all_gather_object(parts, local, group=_control)
    # A rank whose share is empty (fewer rows than ranks) may hold a shapeless array.
    like = next((p for p in parts if len(p)), local)
    out = np.empty((n, *like.shape[1:]), dtype=like.dtype)
    for r, part in enumerate(parts):
        if len(part):
            out[r :: d.world] = part
    return out


def sharded(fn: Callable[[list[Any]], np.ndarray], items: list[Any], d: Dist) -> np.ndarray:
    """`fn` over this rank's strided share of `items` (texts r, r + world, …: lengths stay
    balanced), every rank getting all the rows back in order; `fn(items)` without torchrun."""
    return gather_rows(fn(items[d.rank :: d.world]), len(items), d)


def gather_objects(obj: Any, d: Dist) -> list[Any]:
    """Every rank's `obj`, in rank order (one item without torchrun)."""
    if not d.on:
        return [obj]
    parts: list[Any] = [None] * d.world
    td.all_gather_object(parts, obj, group=_control)
    return parts


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the state dict's bytes (names in order): equal digests, equal weights."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def wrap(module: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """DistributedDataParallel around the module a step runs (unused parameters allowed:
    a multi-task step uses only its tasks' heads)."""
    if not d.on:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def check_global_batch(batch_size: int, d: Dist) -> None:
    """--batch-size is the global batch: every rank needs at least one row of it."""
    if batch_size < d.world:
        raise ConfigError(
            f"--batch-size {batch_size} is the global batch, split over {d.world} "
            f"processes: use at least {d.world}"
        )


def check_weights_agree(model: nn.Module, d: Dist) -> dict[str, Any]:
    """Under torchrun: every rank's weight digest (they must agree), for the run summary."""
    if not d.on:
        return {}
    digests = gather_objects(weights_digest(model), d)
    if len(set(digests)) > 1:
        raise RuntimeError(f"the ranks ended with different weights: {digests}")
    return {"ranks": d.world, "weights_sha256": digests}
