"""Latency and memory measurement, as small context managers every scenario uses.

- `latency(device)`: wall time of a block, with the device synchronised on both sides (CUDA work is
  asynchronous: without the sync a block would time the launch, not the work).
- `CudaPeakMemory`: `torch.cuda.max_memory_allocated` above what was allocated when the block began.
- `RssSampler`: the peak resident set size of *another* process (psutil on its pid), sampled by the parent
  launcher, so no sampling thread runs inside the process being timed (it would compete with the measured
  loop for the GIL).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass


def sync(device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


@dataclass
class Timing:
    seconds: float = float("nan")


@contextmanager
def latency(device=None):
    """`with latency(dev) as t: ...` then `t.seconds`."""
    timing = Timing()
    sync(device)
    t0 = time.perf_counter()
    try:
        yield timing
    finally:
        sync(device)
        timing.seconds = time.perf_counter() - t0




def rss_bytes(pid: int | None = None) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def maxrss_bytes() -> int:
    """This process's high-water RSS (getrusage; Linux reports KiB, macOS bytes): the fallback peak where
    /proc/self/clear_refs is not allowed."""
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024



class CudaPeakMemory:
    """`torch.cuda.max_memory_allocated` above what was allocated when `reset()` was called."""

    method = "cuda:max_memory_allocated"

    def __init__(self, device):
        import torch

        self.torch, self.device, self.baseline = torch, device, 0

    def reset(self) -> int:
        self.torch.cuda.synchronize(self.device)
        self.torch.cuda.empty_cache()
        self.torch.cuda.reset_peak_memory_stats(self.device)
        self.baseline = self.torch.cuda.memory_allocated(self.device)
        return self.baseline

    def peak_total(self) -> int:
        self.torch.cuda.synchronize(self.device)
        return int(self.torch.cuda.max_memory_allocated(self.device))


class RssSampler:
    """The peak RSS of another process (the measured child), sampled from outside by the launcher's loop."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0

    def sample(self) -> int:
        try:
            rss = self.process.memory_info().rss
        except Exception:  # noqa: BLE001 - the process has just exited
            return self.peak
        self.peak = max(self.peak, rss)
        return rss


# ---- peak RSS of this process over a window (Linux: /proc/self/clear_refs resets VmHWM) ----

def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it.
    Writing 5 to /proc/self/clear_refs (Linux >= 4.0) touches no page; it only resets the high-water mark."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """This process's peak RSS since the last `reset_peak_rss()` (VmHWM of /proc/self/status), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
