"""What runs inside the child process for one point: load, warm up, time, measure peak memory.

Time: `time.perf_counter`, with `torch.cuda.synchronize()` around every timed region on CUDA.
Memory:
- CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus the memory allocated
  before the measured runs (weights, warm-up leftovers).
- CPU: the process RSS, sampled every 2 ms by a thread (psutil), and `getrusage(RUSAGE_SELF).ru_maxrss`
  when it rises during the measured runs (it catches spikes between samples); the peak minus the RSS
  measured after loading and warm-up (with `gc.collect()` and glibc's `malloc_trim(0)`, so freed warm-up
  buffers are not counted in the baseline). The weights' size is reported separately.
Warm-up: prefill runs `warmup` untimed passes over the first min(T, 1024) tokens; generate runs the
prompt plus 8 decode steps. The time budget counts from the end of loading (warm-up included).
"""
from __future__ import annotations

import ctypes
import gc
import math
import re
import resource
import sys
import threading
import time
from pathlib import Path

from .points import PointSpec, kv_label

WARMUP_PREFILL_TOKENS = 1024
WARMUP_DECODE_STEPS = 8
SAMPLE_INTERVAL_S = 0.002
OOM_PATTERNS = re.compile(r"out of memory|can't allocate memory|cannot allocate memory|not enough memory|"
                          r"bad_alloc|memoryerror|failed to allocate", re.IGNORECASE)


class PointFailure(Exception):
    """Ends a point with a status other than ok (timeout, oom, error) and a one-line reason."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc), so RSS reflects live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # Linux reports KiB


class MemoryMonitor:
    """Peak memory of the measured region, above a baseline taken right before it."""

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.cuda = device.startswith("cuda")
        self.device = device
        self.method = ("cuda:max_memory_allocated" if self.cuda else
                       f"cpu:rss_sampled_{int(SAMPLE_INTERVAL_S * 1000)}ms+ru_maxrss_above_loaded")
        self.baseline = 0
        self._max = 0
        self._maxrss_before = 0
        self._stop = threading.Event()
        self._thread = None
        if not self.cuda:
            import psutil

            self._proc = psutil.Process()
            self._max = self.rss()
            self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
            self._thread.start()

    def rss(self) -> int:
        return self._proc.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = self.rss()
            if rss > self._max:
                self._max = rss
            self._stop.wait(SAMPLE_INTERVAL_S)

    def reset(self) -> int:
        """Free what can be freed, take the baseline, and start a new peak from it."""
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = self.torch.cuda.memory_allocated(self.device)
        else:
            malloc_trim()
            self.baseline = self.rss()
            self._max = self.baseline
            self._maxrss_before = maxrss_bytes()
        return self.baseline

    def peak_total(self) -> int:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            return int(self.torch.cuda.max_memory_allocated(self.device))
        peak = max(self._max, self.rss())
        maxrss = maxrss_bytes()
        if maxrss > self._maxrss_before:  # the process high-water mark rose during the measured region
            peak = max(peak, maxrss)
        return int(peak)

    def limit(self, extra_bytes: int | None) -> None:
        """Cap what the measured region may allocate beyond the current footprint (the --memory-limit)."""
        if not extra_bytes:
            return
        if self.cuda:
            total = self.torch.cuda.get_device_properties(self.device).total_memory
            allocated = self.torch.cuda.memory_allocated(self.device)
            self.torch.cuda.set_per_process_memory_fraction(min(1.0, (allocated + extra_bytes) / total), self.device)
            return
        vms = self._proc.memory_info().vms
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = vms + extra_bytes
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))

    def unlimit(self) -> None:
        if self.cuda:
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))

    def stop(self) -> None:
        self._stop.set()


class Clock:
    """The per-point time budget, counted from the end of loading."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def over(self) -> bool:
        return self.elapsed() > self.budget_s


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return bool(OOM_PATTERNS.search(f"{type(exc).__name__}: {exc}"))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}"[:300] if not isinstance(exc, PointFailure) else line[:300]


def random_ids(n: int, vocab: int, seed: int) -> list[int]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


def vocab_size(backend) -> int:
    config = getattr(getattr(backend, "model", None), "config", None)
    return int(getattr(config, "vocab_size", None) or 1000)


def run_point(spec: PointSpec) -> dict:
    """Measure one point. Returns the row fields (status ok), or raises PointFailure / any exception."""
    import torch

    from ..specs import resolve

    t_start = time.perf_counter()
    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    dtype = getattr(torch, spec.dtype)
    needed = spec.seq_len + (spec.prompt_len if spec.scenario == "generate" else 0)
    backend = resolve(spec.model, device=spec.device, dtype=dtype, tokenizer=spec.tokenizer,
                      max_positions=needed + 8, kv_cache=spec.kv_cache, chunk_size=spec.chunk_size,
                      seed=spec.seed)
    load_s = time.perf_counter() - t_start
    info = {
        "family": backend.family, "implementation": backend.implementation,
        "random_weights": bool(backend.random_weights), "weights_bytes": backend.weights_bytes(),
        "kv_cache": kv_label(backend.family, spec.kv_cache), "device": str(backend.device),
        "dtype": str(backend.dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
        "load_s": load_s,
    }
    if backend.max_context and needed > backend.max_context:
        raise PointFailure("error", f"{needed} tokens exceed the model's context of {backend.max_context}")
    monitor = MemoryMonitor(spec.device)
    info["mem_method"] = monitor.method
    if spec.loaded_path:
        Path(spec.loaded_path).touch()  # the parent starts the budget clock now
    clock = Clock(spec.time_budget_s)
    vocab = vocab_size(backend)
    try:
        if spec.scenario == "prefill":
            measured = measure_prefill(backend, spec, monitor, clock, vocab)
        elif spec.scenario == "generate":
            measured = measure_generate(backend, spec, monitor, clock, vocab)
        else:
            raise PointFailure("error", f"unknown scenario {spec.scenario!r}")
    except BaseException as exc:
        monitor.unlimit()  # room to report the failure
        if isinstance(exc, PointFailure):
            exc.info = info
            raise
        status = "oom" if is_oom(exc) else "error"
        failure = PointFailure(status, one_line(exc))
        failure.info = info
        raise failure from exc
    finally:
        monitor.unlimit()
        monitor.stop()
    return {**info, **measured, "status": "ok", "error": ""}


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def memory_fields(monitor: MemoryMonitor) -> dict:
    total = monitor.peak_total()
    return {"peak_mem_bytes": max(0, total - monitor.baseline), "peak_total_bytes": total,
            "baseline_bytes": monitor.baseline}


def measure_prefill(backend, spec: PointSpec, monitor: MemoryMonitor, clock: Clock, vocab: int) -> dict:
    """One forward pass over T tokens (backend.start: RWKV chunked parallel, transformers one pass)."""
    ids = random_ids(spec.seq_len, vocab, spec.seed)
    for _ in range(max(0, spec.warmup)):
        out = backend.start(ids[:min(spec.seq_len, WARMUP_PREFILL_TOKENS)])
        out = None  # noqa: F841 - drop the cache before measuring
    sync(backend.device)
    monitor.reset()
    monitor.limit(spec.memory_limit_bytes)
    times = []
    out = None
    for _ in range(max(1, spec.repeats)):
        out = None  # the previous pass's cache must not be alive during this one
        t0 = time.perf_counter()
        out = backend.start(ids)
        sync(backend.device)
        times.append(time.perf_counter() - t0)
        if clock.over():
            raise PointFailure("timeout", f"exceeded the time budget of {spec.time_budget_s:g} s "
                                          f"(one pass took {times[-1]:.3g} s)")
        if clock.elapsed() + times[-1] > spec.time_budget_s:
            break  # another repeat would not fit in the budget
    mem = memory_fields(monitor)
    out = None  # noqa: F841
    times.sort()
    median = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    return {"latency_s": median, "latency_min_s": times[0], "latency_max_s": times[-1], "repeats": len(times),
            "tokens_per_s": spec.seq_len / median if median > 0 else None, **mem}


def greedy(logits) -> int:
    return int(logits.argmax())


def measure_generate(backend, spec: PointSpec, monitor: MemoryMonitor, clock: Clock, vocab: int) -> dict:
    """Greedy decoding of T tokens after a short random prompt; every step timed on its own."""
    T = spec.seq_len
    prompt = random_ids(spec.prompt_len, vocab, spec.seed)
    logits, cache = backend.start(prompt)
    token = greedy(logits)
    for _ in range(min(WARMUP_DECODE_STEPS, T)):
        logits, cache = backend.step(token, cache)
        token = greedy(logits)
    logits = cache = None
    sync(backend.device)
    monitor.reset()
    monitor.limit(spec.memory_limit_bytes)
    cuda = str(backend.device).startswith("cuda")
    t0 = time.perf_counter()
    logits, cache = backend.start(prompt)
    token = greedy(logits)
    sync(backend.device)
    prompt_s = time.perf_counter() - t0
    latencies = [0.0] * T
    perf = time.perf_counter
    for i in range(T):
        t0 = perf()
        logits, cache = backend.step(token, cache)
        token = greedy(logits)  # int() waits for the device
        if cuda:
            sync(backend.device)
        latencies[i] = perf() - t0
        if clock.over():
            raise PointFailure("timeout", f"exceeded the time budget of {spec.time_budget_s:g} s "
                                          f"after {i + 1} of {T} tokens")
    mem = memory_fields(monitor)
    logits = cache = None
    tail = latencies[-max(1, math.ceil(0.1 * T)):]
    cumulative = sum(latencies)
    rows, per_row = token_rows(latencies, spec.max_token_rows)
    return {"latency_s": sum(tail) / len(tail), "latency_min_s": min(tail), "latency_max_s": max(tail),
            "cumulative_s": cumulative, "tokens_per_s": T / cumulative if cumulative > 0 else None,
            "prompt_len": spec.prompt_len, "prompt_s": prompt_s, "positions_per_row": per_row,
            "token_rows": rows, **mem}


def token_rows(latencies: list[float], max_rows: int) -> tuple[list[dict], int]:
    """Per-position rows; beyond max_rows positions, consecutive positions are averaged into max_rows rows
    (evenly sized bins, `position` = the bin's last position, `n_positions` = its size)."""
    T = len(latencies)
    bins = T if T <= max_rows else max_rows
    rows, cumulative, start = [], 0.0, 0
    for b in range(bins):
        end = (b + 1) * T // bins
        chunk = latencies[start:end]
        cumulative += sum(chunk)
        rows.append({"position": end, "latency_s": sum(chunk) / len(chunk), "n_positions": len(chunk),
                     "cumulative_s": cumulative})
        start = end
    return rows, math.ceil(T / bins) if T else 1
