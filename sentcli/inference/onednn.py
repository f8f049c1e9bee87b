"""bf16 inference on CPUs with native bf16 (AVX512-BF16, AMX): oneDNN Linear layers that
add the bias, and apply the MLP's GELU, inside the matmul instead of in separate passes, on
weights packed once into oneDNN's layout; and bidirectional attention as cache-sized batched
matmuls, where torch's CPU flash kernel is slow at all-MiniLM's 32-wide heads."""

from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn as nn
from torch import Tensor

from sentcli.device import amx, native_cpu_bf16
from sentcli.inference.quantize import replace_linears
from sentcli.model import MLP, SelfAttention, sdpa

SCORES_PER_CHUNK = 1 << 18
"""Attention scores computed at once (512 KiB in bf16, so they stay in a core's L2 cache
between the two matmuls and the softmax; 2^16 and 2^20 were slower on 256-token texts)."""


PRIVATE = (
    (torch.ops.mkldnn, "_reorder_linear_weight"),
    (torch.ops.mkldnn, "_linear_pointwise"),
    (torch, "_softmax"),
)
"""The private torch functions this module calls: checked once, before any is used."""

log = logging.getLogger(__name__)


@functools.cache
def private_ops_present() -> bool:
    """Whether this torch still has PRIVATE (not public API: a release may drop or rename
    them); where one is missing, CPU bf16 keeps plain Linear layers and SDPA (one debug
    line says so)."""
    missing = [name for owner, name in PRIVATE if not hasattr(owner, name)]
    if missing:
        log.debug(
            "torch %s has no %s: CPU bf16 inference runs plain Linear layers and SDPA",
            torch.__version__, ", ".join(missing),
        )  # fmt: skip
    return not missing


def available() -> bool:
    """oneDNN runs bf16 natively here (`device.native_cpu_bf16`), where the fusion was
    measured, and this torch has its private ops; on older AVX-512 CPUs (emulated bf16) and
    on ARM (ACL, where torch's own compiler leaves this fusion off) nothing fuses."""
    mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return private_ops_present() and mkldnn and native_cpu_bf16()


class FusedLinear(nn.Module):
    """`act(x @ W.T + b)` in one oneDNN call: `nn.Linear` on bf16 is an addmm that first
    copies the broadcast bias into its output, and a separate GELU reads and writes the
    MLP's widest activation once more (on all-MiniLM-L6-v2, fusing both made `embed` 5–10 %
    faster)."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, rows: int, act: nn.GELU | None = None) -> None:
        super().__init__()
        # packed once into oneDNN's blocked layout for `rows`-row inputs, not reordered at
        # every call (6–11 % per matmul at all-MiniLM's shapes); an opaque tensor, so such a
        # module is for inference only: it cannot be deep-copied or saved
        w = linear.weight.detach()
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(w, rows))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())
        # oneDNN's post-op names: exact (erf) GELU is "none", the tanh approximation "tanh"
        self.attr, self.algorithm = ("gelu", act.approximate) if act is not None else ("none", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] → [..., out]
        y: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x, self.weight, self.bias, self.attr, [], self.algorithm
        )
        return y


def fuse_linears(module: nn.Module, rows: int) -> None:
    """Replace every Linear under `module` by a `FusedLinear` with weights packed for
    `rows`-row inputs (the forward's token cap), in place; each MLP's GELU moves into its
    first Linear."""
    for mlp in list(module.modules()):
        if isinstance(mlp, MLP) and isinstance(mlp.act, nn.GELU):
            mlp.c_fc = FusedLinear(mlp.c_fc, rows, mlp.act)  # type: ignore[assignment]
            mlp.act = nn.Identity()
    replace_linears(module, lambda linear: FusedLinear(linear, rows))


def matmul_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, dropout: float
) -> Tensor:
    """`model.sdpa` for bidirectional inference as plain batched matmuls over a few heads at
    a time: torch's CPU flash kernel ran all-MiniLM's 32-wide heads at about a sixth of the
    matmuls' FLOP rate (measured in docs/benchmarks.md, CPU section of the export issue).
    Every row needs a real key (sentcli's texts always hold [BOS]/[CLS]): an all-padding
    row would be NaN here. Causal, dropout and autograd (the `out=` calls) go to SDPA."""
    if causal or dropout or torch.is_grad_enabled():
        return sdpa(q, k, v, mask, causal, dropout)
    B, nh, T, hs = q.shape
    q, v = q.reshape(B * nh, T, hs), v.reshape(B * nh, T, hs)
    kt = k.transpose(-1, -2).reshape(B * nh, hs, T)
    bias = None
    if mask is not None and not bool(mask.all()):  # padding: -inf on its keys
        bias = torch.zeros(B, 1, T, dtype=q.dtype).masked_fill_(~mask.view(B, 1, T), -math.inf)
        bias = bias.repeat_interleave(nh, dim=0)  # [B * nh, 1, T]
    y = torch.empty_like(q)
    step = max(1, SCORES_PER_CHUNK // (T * T))
    scores = torch.empty(min(step, B * nh), T, T, dtype=q.dtype)
    for i in range(0, B * nh, step):
        j = min(i + step, B * nh)
        s = scores[: j - i]
        if bias is None:
            torch.baddbmm(s, q[i:j], kt[i:j], beta=0, alpha=hs**-0.5, out=s)
        else:
            torch.baddbmm(bias[i:j], q[i:j], kt[i:j], alpha=hs**-0.5, out=s)
        torch._softmax(s, -1, False, out=s)
        torch.bmm(s, v[i:j], out=y[i:j])
    return y.view(B, nh, T, hs)


def matmul_attention_faster() -> bool:
    """Where `matmul_attention` was measured faster than SDPA: native bf16 without AMX. With
    AMX the flash kernel's small gemms run on the tiles (≈ 0.3 ms per 256-token review and
    layer in an earlier measurement, where unchunked matmuls were slower); untested there
    since, so AMX CPUs keep SDPA."""
    return available() and not amx()


def use_matmul_attention(module: nn.Module) -> None:
    """Every SelfAttention under `module` attends with `matmul_attention`, in place."""
    for attn in module.modules():
        if isinstance(attn, SelfAttention):
            attn.attention = matmul_attention
