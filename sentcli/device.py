"""Where and at what precision work runs: device and autocast resolution, host-to-device
copies and seeding. Training and inference both use it; it probes the hardware, no I/O."""

from __future__ import annotations

import contextlib
import functools
import platform
import random

import numpy as np
import torch

from sentcli.errors import ConfigError


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


def _probe(owner: object, name: str) -> bool:
    """A private torch CPU probe (torch.cpu._is_…, mkldnn._is_…); False where this torch
    has no such function (they are not public API, and may go)."""
    fn = getattr(owner, name, None)
    return bool(fn is not None and fn())


def x86() -> bool:
    """An x86-64 CPU (where AVX512-BF16/AMX say whether bf16 is native)."""
    return platform.machine().lower() in {"x86_64", "amd64"}


def mkldnn_bf16() -> bool:
    """oneDNN runs bf16 on this CPU (natively, or emulated on older AVX-512 and ARM)."""
    return _probe(torch.ops.mkldnn, "_is_mkldnn_bf16_supported")


def native_cpu_bf16() -> bool:
    """This CPU has bf16 instructions (AVX512-BF16 or AMX) and oneDNN uses them. oneDNN's own
    `_is_mkldnn_bf16_supported` is wider: older AVX-512 CPUs (emulated) and ARM (ACL)."""
    native = _probe(torch.cpu, "_is_avx512_bf16_supported") or amx()
    return native and mkldnn_bf16()


@functools.cache
def amx() -> bool:
    """This CPU has AMX tiles (and torch can tell)."""
    return _probe(torch.cpu, "_is_amx_tile_supported")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = plain fp32). `auto` takes bf16 where the hardware has it
    (recent GPUs; CPUs with AVX512-BF16/AMX, where bf16 matmuls are ~4x faster). Not where
    oneDNN emulates bf16 (AVX-512 without BF16: a Linear ran 3.7x slower than in fp32 on
    such a Xeon); off x86 (ARM) oneDNN's own answer stands: it says yes only with bf16
    instructions there."""
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
    if device.type == "cpu" and (native_cpu_bf16() if x86() else mkldnn_bf16()):
        return torch.bfloat16
    return None


def dtype_name(dtype: torch.dtype | None) -> str:
    """bf16, fp16 or fp32 (None: no autocast)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32") if dtype else "fp32"


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[object]:
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
