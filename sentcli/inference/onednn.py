"""bf16 inference on CPUs with native bf16 (AVX512-BF16, AMX): oneDNN Linear layers that
add the bias, and apply the MLP's GELU, inside the matmul instead of in separate passes."""

from __future__ import annotations

import torch
import torch.nn as nn

from sentcli.model import MLP


def available() -> bool:
    """An x86 CPU with bf16 instructions (AVX512-BF16 or AMX), where the fusion was measured.
    oneDNN also runs bf16 on older AVX-512 CPUs by emulation and on ARM through ACL (where
    torch's own compiler leaves this fusion off); neither was measured, so neither fuses."""
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return bool(native and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class FusedLinear(nn.Module):
    """`act(x @ W.T + b)` in one oneDNN call: `nn.Linear` on bf16 is an addmm that first
    copies the broadcast bias into its output, and a separate GELU reads and writes the
    MLP's widest activation once more (on all-MiniLM-L6-v2, fusing both made `embed` 5–10 %
    faster)."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, act: nn.GELU | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", linear.weight.detach())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())
        # oneDNN's post-op names: exact (erf) GELU is "none", the tanh approximation "tanh"
        self.attr, self.algorithm = ("gelu", act.approximate) if act is not None else ("none", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x.reshape(-1, shape[-1]), self.weight, self.bias, self.attr, [], self.algorithm
        )
        return y.view(*shape[:-1], -1)


def fuse_linears(module: nn.Module) -> None:
    """Replace every Linear under `module` by a `FusedLinear`, in place; each MLP's
    GELU moves into its first Linear."""
    for name, child in module.named_children():
        if isinstance(child, MLP) and isinstance(child.act, nn.GELU):
            child.c_fc = FusedLinear(child.c_fc, child.act)  # type: ignore[assignment]
            child.c_proj = FusedLinear(child.c_proj)  # type: ignore[assignment]
            child.act = nn.Identity()
        elif isinstance(child, nn.Linear):
            setattr(module, name, FusedLinear(child))
        else:
            fuse_linears(child)
