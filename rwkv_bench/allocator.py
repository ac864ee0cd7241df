"""glibc's heap and MKL's buffer pool, set the way a measured process needs them (where the process has
them; elsewhere the calls do nothing).

- `keep_freed_memory()`: by default glibc hands large freed blocks straight back to the OS (mmap for blocks
  over a threshold, trimming the heap's top past another), so the next forward pass page-faults every
  activation buffer in again: about 100,000 faults per 1,024-token chunk of a 169M model, a tenth of its
  time (benchmarks/profile_rwkv.py). Raising both thresholds keeps freed blocks for reuse, which is what
  PyTorch's CPU tuning guide gets by preloading jemalloc or TCMalloc. Every scaling child sets it first, so
  every model it measures (ours and the baselines) runs under the same allocator.
- `trim()`: hand whatever glibc keeps back to the OS, so an RSS reading is live memory (called outside
  timed intervals; `malloc_trim` ignores the thresholds above). It first empties MKL's buffer pool
  (`mkl_free_buffers`): PyTorch's GEMMs pack into buffers MKL keeps for reuse, an allocator cache like
  glibc's, bounded per process (with rwkv4-169m: 39 MiB allocated, of which a batched step at B = 1,024
  touches 10 MiB more than at B = 1, and B = 4,096 no more), which would otherwise read as memory per sequence.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3    # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD = 32 * 2**20                    # glibc's upper bound for this threshold on 64-bit
TRIM_THRESHOLD = 2**30

POLICY = (f"glibc malloc keeping freed blocks (mallopt M_MMAP_THRESHOLD {MMAP_THRESHOLD // 2**20} MiB, "
          f"M_TRIM_THRESHOLD {TRIM_THRESHOLD // 2**30} GiB), as jemalloc or TCMalloc would: steps do not "
          "page-fault their buffers in anew; malloc_trim (and mkl_free_buffers, for MKL's GEMM buffer pool) "
          "returns them before every memory reading")


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def policy() -> str:
    """What `keep_freed_memory` sets on this platform, in words (for a run's metadata)."""
    return POLICY if _LIBC is not None else "the platform's default allocator (not glibc: left as it is)"


def keep_freed_memory() -> None:
    """Keep freed blocks in the heap for reuse."""
    if _LIBC is not None:
        _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        _LIBC.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def trim() -> None:
    """Freed heap and MKL's buffer pool back to the OS."""
    free_mkl_buffers()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def free_mkl_buffers() -> None:
    """MKL's `mkl_free_buffers`, where the loaded PyTorch links MKL (exported as `mkl_serv_free_buffers` from
    libtorch_cpu.so in the pip wheels); nothing otherwise, or before torch is imported."""
    global _MKL_FREE
    if _MKL_FREE is None:
        _MKL_FREE = _mkl_free_function()
    if _MKL_FREE:
        _MKL_FREE()


_MKL_FREE = None  # unknown until torch is loaded; False: not there


def _mkl_free_function():
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    libs = [None, os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")]
    for lib in libs:
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for name in ("mkl_free_buffers", "MKL_Free_Buffers", "mkl_serv_free_buffers"):
            if hasattr(handle, name):
                return getattr(handle, name)
    return False
