"""Keep freed CPU memory in the process instead of handing it back to the kernel after every training step.

PyTorch's CPU allocator asks glibc's malloc for every tensor. glibc serves large requests with mmap (always above
32 MB, its cap on the mmap threshold; below it too until the threshold has adapted) and trims the top of the heap
when more than a threshold is free, so a training step that allocates and frees the same large buffers every step
(scores (B, T, K), the memory store's concatenation, a population's (P B, M, E) tensors) gets fresh pages from
the kernel each time: a page fault and a page of zeroing per 4 KB, on every step. `keep_freed_memory()` turns both
off (M_MMAP_MAX = 0: every allocation from the heap; M_TRIM_THRESHOLD huge: free memory stays in it), so after the
first steps the buffers are reused without faults. The cost is that the process keeps its peak heap until it ends.

It changes no number a model computes, only where its buffers live. Linux with glibc only; elsewhere it does
nothing and says so (returns False). Measured (docs/results/engine-2026-12-03b.md): a population of 8 models at
the reference config went from 18-19k page faults per step to 1 and its steps got 15-17% faster; one model has no
faults to save (glibc's threshold adapts to its < 32 MB buffers) and was not faster. So the spatial trainers call
it when `train.keep_freed_memory` is true, or 'auto' (the default) and a population has two or more members.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1          # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1         # mallopt takes an int: the largest, about 2 GB of free heap before a trim

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse (see the module docstring). True if applied (or already
    applied in this process), False where the C library is not glibc."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version                      # glibc only: musl has no mallopt parameters to honour
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on error
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER))
    return _applied
