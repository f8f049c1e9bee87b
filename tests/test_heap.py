"""The heap settings: training keeps freed blocks for the next step, inference trims."""

import ctypes
import ctypes.util
import subprocess
import sys

import pytest

# In a fresh interpreter: a 64 MB block is mapped afresh (glibc's default for large blocks)
# until keep_freed, then served from the heap, kept there when freed, and trimmed by release.
SCRIPT = """
import ctypes, ctypes.util
import numpy as np
from sentcli import heap

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Info
mb = lambda n: n >> 20
a = np.ones(64 << 20, dtype=np.uint8)
print(mb(libc.mallinfo2().hblkhd))
del a
heap.keep_freed()
b = np.ones(64 << 20, dtype=np.uint8)
print(mb(libc.mallinfo2().hblkhd), mb(libc.mallinfo2().arena))
del b
print(mb(libc.mallinfo2().arena))
heap.release()
print(mb(libc.mallinfo2().arena))
"""


def _has_mallinfo2() -> bool:
    name = ctypes.util.find_library("c")
    return name is not None and hasattr(ctypes.CDLL(name), "mallinfo2")


@pytest.mark.skipif(not _has_mallinfo2(), reason="reads glibc >= 2.33's mallinfo2")
def test_keep_freed_serves_large_blocks_from_the_heap_and_release_trims_it() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (mapped_before,), (mapped_after, heap_in_use), (kept,), (trimmed,) = (
        tuple(int(x) for x in line.split()) for line in out.stdout.splitlines()
    )
    assert mapped_before >= 64  # glibc's default: its own mapping, unmapped at free
    assert mapped_after == 0 and heap_in_use >= 64
    assert kept >= 64  # freed, and still there for the next step
    assert trimmed < 16
