"""glibc's heap, set the way a measured process needs it (glibc only; elsewhere both calls do nothing).

- `keep_freed_memory()`: by default glibc hands large freed blocks straight back to the OS (mmap for blocks
  over a threshold, trimming the heap's top past another), so the next forward pass page-faults every
  activation buffer in again: about 100,000 faults per 1,024-token chunk of a 169M model, a tenth of its
  time (benchmarks/profile_rwkv.py). Raising both thresholds keeps freed blocks for reuse, which is what
  PyTorch's CPU tuning guide gets by preloading jemalloc or TCMalloc. Every scaling child sets it first, so
  every model it measures (ours and the baselines) runs under the same allocator.
- `trim()`: hand whatever glibc keeps back to the OS, so an RSS reading is live memory (called outside
  timed intervals; `malloc_trim` ignores the thresholds above).
"""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3    # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD = 32 * 2**20                    # glibc's upper bound for this threshold on 64-bit
TRIM_THRESHOLD = 2**30

POLICY = (f"glibc malloc keeping freed blocks (mallopt M_MMAP_THRESHOLD {MMAP_THRESHOLD // 2**20} MiB, "
          f"M_TRIM_THRESHOLD {TRIM_THRESHOLD // 2**30} GiB), as jemalloc or TCMalloc would: steps do not "
          "page-fault their buffers in anew; malloc_trim returns them before every memory reading")


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
    """Freed heap back to the OS."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
