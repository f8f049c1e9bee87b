"""Batched, streaming inference: sentence vectors and task probabilities, in input order.

Each chunk of input is sorted by token length into batches (little padding), run under
`inference_mode` at the chosen precision and scattered back into input order. The next
chunk is read and tokenized in a worker thread while the model runs on the current one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tokenizers import Tokenizer

from sentcli.data import collate, length_batches
from sentcli.errors import ConfigError
from sentcli.model import LanguageModel, MultiTaskModel, pool
from sentcli.streams import Chunk
from sentcli.tokenizer import encode_counting
from sentcli.train import autocast, resolve_precision

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, looked up on first use (not at every command's start-up)."""
    if os.name != "posix":
        return None
    return getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)


def _release_memory() -> None:
    """Give freed heap pages back to the OS (glibc's malloc keeps them otherwise: every batch
    has a new shape, and the resident size would creep up with the input's length)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


BatchFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class InferenceStats:
    texts: int = 0
    tokens: int = 0
    """Real (non-padding) tokens, [BOS]/[EOS] included."""
    truncated: int = 0
    seconds: float = 0.0


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights (one scale per output channel) that quantises its
    input per token at run time, multiplies in int8 (`torch._int_mm`, VNNI on x86) and
    scales back to fp32.

    Per-token scales keep a text's vector independent of its batch neighbours, and outlier
    tokens (all-MiniLM has them) cost only their own precision: torch's `quantize_dynamic`
    (one 7-bit scale per batch) gave a minimum cosine of 0.86 to fp32 there, this 0.996."""

    w_scale: torch.Tensor
    w_t: torch.Tensor
    bias: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # [N]
        self.register_buffer("w_scale", scale)
        # [K, N] view of an [N, K] buffer: the layout _int_mm is fastest with
        self.register_buffer("w_t", torch.round(w / scale[:, None]).to(torch.int8).t())
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros_like(scale)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        # max |x| per token (amax and amin are much faster on CPU than abs().amax())
        s = torch.maximum(x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True).neg_())
        s = s.clamp_(min=1e-8).div_(127.0)
        xq = x.div(s).round_().to(torch.int8)
        y = torch._int_mm(xq, self.w_t).float().mul_(s).mul_(self.w_scale).add_(self.bias)
        return y.view(*shape[:-1], -1)


def quantize_int8(module: nn.Module) -> None:
    """Replace every Linear layer under `module` by an `Int8Linear`, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            quantize_int8(child)


def prepare(model: nn.Module, device: torch.device, precision: str) -> torch.dtype | None:
    """Eval mode on `device` at `precision`; returns the autocast dtype (None: none).

    int8 (CPU): the encoder's Linear layers become `Int8Linear` (dynamic quantisation:
    weights once, activations per token); attention, norms, embeddings and the task heads
    stay fp32."""
    model.eval()
    if precision == "int8":
        if device.type != "cpu":
            raise ConfigError("--precision int8 runs on the CPU; use bf16 on a GPU")
        quantize_int8(model.get_submodule("trunk"))
        return None
    model.to(device)
    return resolve_precision(precision, device)


def vector_fn(model: MultiTaskModel | LanguageModel, normalize: bool) -> BatchFn:
    """ids, mask → sentence vectors (the model's pooling, masked mean by default;
    L2-normalised with `normalize`)."""
    trunk = model.trunk
    mode = trunk.config.pooling

    def fn(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        v = pool(trunk(ids, mask).float(), mask, mode)
        return F.normalize(v, dim=-1) if normalize else v

    return fn


def proba_fn(model: MultiTaskModel, task: str) -> BatchFn:
    """ids, mask → class probabilities of `task`'s head."""
    return lambda ids, mask: torch.softmax(model(ids, mask, task)[0].float(), dim=-1)


@torch.inference_mode()
def apply_batched(
    fn: BatchFn,
    seqs: list[np.ndarray],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """`fn(ids, mask) → [B, D]` over length-sorted batches; row i of the result is seqs[i]."""
    if not seqs:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    out: np.ndarray | None = None
    pin = device.type == "cuda"
    for idx in length_batches(lengths, batch_size):
        ids, mask = collate([seqs[i] for i in idx])
        if pin:  # page-locked host memory: the copy overlaps with queued GPU work
            ids, mask = ids.pin_memory(), mask.pin_memory()
        with autocast(device, dtype):
            rows = fn(ids.to(device, non_blocking=pin), mask.to(device, non_blocking=pin))
        values = rows.float().cpu().numpy()
        if out is None:
            out = np.empty((len(seqs), values.shape[1]), dtype=np.float32)
        out[idx] = values  # scatter back: restores the input order
    assert out is not None
    return out


def predict_logits(
    model: MultiTaskModel,
    task: str,
    seqs: list[np.ndarray],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Logits [N, n_labels] of `task`'s head for each token id array."""
    model.eval()
    return apply_batched(lambda i, m: model(i, m, task)[0], seqs, batch_size, device, dtype)


def stream(
    chunks: Iterator[Chunk],
    tokenizer: Tokenizer,
    max_length: int,
    fn: BatchFn,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
    stats: InferenceStats,
) -> Iterator[tuple[Chunk, np.ndarray]]:
    """(chunk, its rows of `fn`) in input order; the next chunk is read and tokenized in a
    worker thread (tokenizers and torch both release the GIL) while this one runs."""

    def load() -> tuple[Chunk, list[np.ndarray], int] | None:
        chunk = next(chunks, None)
        if chunk is None:
            return None
        seqs, cut = encode_counting(tokenizer, chunk.texts, max_length)
        return chunk, seqs, cut

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentcli-read") as pool:
        pending: Future[tuple[Chunk, list[np.ndarray], int] | None] = pool.submit(load)
        while (item := pending.result()) is not None:
            pending = pool.submit(load)
            chunk, seqs, cut = item
            rows = apply_batched(fn, seqs, batch_size, device, dtype)
            stats.texts += len(seqs)
            stats.tokens += sum(len(s) for s in seqs)
            stats.truncated += cut
            stats.seconds = time.perf_counter() - start
            yield chunk, rows
            _release_memory()
