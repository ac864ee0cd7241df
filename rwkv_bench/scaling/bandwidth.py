"""The machine's memory bandwidth, measured in the run: a STREAM-like copy of arrays far larger than the caches.

A decode step must read every weight (and, for a transformer, its KV cache; for a recurrent model its state)
once, so bytes read / step time against this copy bandwidth says how close a model comes to the hardware's
limit. STREAM's Copy kernel counts 2 x the array (one read, one write) per pass; the best of a few passes is
taken, as STREAM does. Run with the threads the children use.
"""
from __future__ import annotations

import time

COPY_BYTES = 256 * 2 ** 20  # per array: well past any last-level cache
PASSES = 5


def copy_bandwidth_gbs(threads: int | None = None, nbytes: int = COPY_BYTES, passes: int = PASSES) -> dict:
    """{"copy_gbs": best GB/s (1e9 bytes), "array_bytes", "passes", "threads"} of torch's copy_."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        src = torch.ones(nbytes // 4, dtype=torch.float32)
        dst = torch.empty_like(src)
        dst.copy_(src)  # pages touched before timing
        best = float("inf")
        for _ in range(passes):
            t0 = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - t0)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    return {"copy_gbs": 2 * nbytes / best / 1e9, "array_bytes": nbytes, "passes": passes, "threads": used,
            "method": "torch copy_ of float32 arrays, best pass; bytes = read + written (STREAM Copy)"}


def step_bandwidth(read_bytes: float | None, seconds: float | None, copy_gbs: float | None) -> dict:
    """bandwidth_gbs and bandwidth_fraction of one decode step that reads `read_bytes` in `seconds`."""
    if not read_bytes or not seconds or seconds <= 0:
        return {}
    gbs = read_bytes / seconds / 1e9
    return {"bandwidth_gbs": gbs, "bandwidth_fraction": gbs / copy_gbs if copy_gbs else None}
