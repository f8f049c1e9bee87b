"""Distillation: a teacher run's sentence vectors for a corpus, computed once and cached on
disk, for plain-text tasks to match (`--teacher RUN`).

The cache is keyed by the teacher (its config and weights) and the texts: any run reuses
it. Vectors are computed chunk by chunk into part files (bounded memory; a killed
computation resumes at the first missing part), then joined into one .npy that training
reads memory-mapped. The teacher keeps its own tokenizer and pooling."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sentcli import checkpoint as ckpt
from sentcli import dist, files
from sentcli.device import resolve_device
from sentcli.errors import CheckpointError
from sentcli.inference.embed import apply_batched, prepare, vector_fn
from sentcli.tokenizer import encode

if TYPE_CHECKING:
    from datasets import Dataset

PART_ROWS = 4096


def _teacher_key(teacher: Path) -> str:
    h = hashlib.sha256((teacher / ckpt.CONFIG).read_bytes())
    weights = teacher / ckpt.WEIGHTS
    with open(weights, "rb") as f:  # the header (names, shapes, offsets) and the first MiB
        h.update(f.read(1 << 20))
    h.update(str(weights.stat().st_size).encode())
    h.update((teacher / ckpt.TOKENIZER).read_bytes())  # the same weights, other tokens differ
    return h.hexdigest()[:16]


def check_teacher(teacher: str) -> str:
    """The --teacher run's absolute path (a resumed run may start elsewhere), checked."""
    path = Path(teacher).resolve()
    try:
        ckpt.check_shapes(ckpt.read_config(path), path)  # its model is built only later
    except CheckpointError as e:
        raise CheckpointError(f"--teacher: {e}") from e
    return str(path)


def teacher_dim(teacher: Path) -> int:
    """The width of the teacher's sentence vectors."""
    config = ckpt.read_config(teacher)
    return config.model.n_embd


def teacher_vectors(
    teacher: Path, ds: Dataset, batch_size: int, device: str, ranks: dist.Dist
) -> np.ndarray:
    """The teacher's L2-normalised vectors of `ds`'s `text` column, row i for row i
    (float32 [N, D], memory-mapped from the cache). Under torchrun the main rank computes
    them and the others wait."""
    key = hashlib.sha256(f"{_teacher_key(teacher)}|{ds._fingerprint}|{len(ds)}".encode())
    folder = files.cache_root() / "teacher" / key.hexdigest()[:24]
    done = folder / "vectors.npy"
    if not done.is_file() and ranks.main:
        _compute(teacher, ds, folder, batch_size, device)
    dist.barrier(ranks)
    vectors: np.ndarray = np.load(done, mmap_mode="r")
    if len(vectors) != len(ds):
        raise CheckpointError(f"{done} has {len(vectors)} rows for {len(ds)} texts; delete it")
    return vectors


def _compute(teacher: Path, ds: Dataset, folder: Path, batch_size: int, device: str) -> None:
    config, net, tok, _ = ckpt.load_run(teacher)
    dev = resolve_device(device)
    dtype = prepare(net, dev, "fp32")  # the targets: full precision
    embed = vector_fn(net, normalize=True)  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, start in enumerate(range(0, len(ds), PART_ROWS)):
        part = folder / f"part-{i:05d}.npy"
        parts.append(part)
        if part.is_file():  # computed before a stop: resume after it
            continue
        texts = ds[start : start + PART_ROWS]["text"]
        seqs = encode(tok, texts, config.model.block_size)
        rows = apply_batched(embed, seqs, batch_size, dev, dtype)
        files.atomic_write(part, partial(_save, rows=rows))
    total = sum(len(np.load(p, mmap_mode="r")) for p in parts)
    dim = np.load(parts[0], mmap_mode="r").shape[1]

    def join(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim))
        at = 0
        for p in parts:
            block = np.load(p, mmap_mode="r")
            out[at : at + len(block)] = block
            at += len(block)
        out.flush()

    files.atomic_write(folder / "vectors.npy", join)
    for p in parts:
        p.unlink()


def _save(path: Path, *, rows: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add .npy to a name
        np.save(f, rows)
