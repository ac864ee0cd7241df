"""What runs inside the child process for one point: load, warm up, time, mark the measured region.

Time: `time.perf_counter`, with the device synchronised around every timed region on CUDA.
Memory (`MeasuredRegion`):
- CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus the memory allocated
  before the measured runs (weights, warm-up leftovers).
- CPU: the launcher (the parent process) samples this process's RSS every few milliseconds while the region
  is open, so no sampling thread competes with the measured loop for the GIL; this process adds its
  `getrusage` high-water mark when it rose inside the region (a spike between two samples). The baseline is
  the RSS after loading and warm-up, taken after `gc.collect()` and glibc's `malloc_trim(0)`, so freed
  warm-up buffers are not counted. The weights' size is reported separately.
Warm-up: prefill runs `warmup` untimed passes over the first min(T, 1024) tokens; generate runs the
prompt plus 8 decode steps. The time budget counts from the end of loading (warm-up included).
"""
from __future__ import annotations

import gc
import json
import math
import os
import re
import resource
import time
from pathlib import Path

from ..trackers import CudaPeakMemory, latency, malloc_trim, maxrss_bytes, rss_bytes, sync
from .points import PointSpec, kv_label

WARMUP_PREFILL_TOKENS = 1024
WARMUP_DECODE_STEPS = 8
# RLIMIT_AS is only a safety net under --memory-limit (the launcher enforces the limit on sampled RSS):
# address space counts thread stacks and malloc arenas that are reserved, not used.
ADDRESS_SPACE_SLACK = 2 * 1024 ** 3
OOM_PATTERNS = re.compile(r"out of memory|can't allocate memory|cannot allocate memory|not enough memory|"
                          r"bad_alloc|memoryerror|failed to allocate", re.IGNORECASE)
CPU_METHOD = "cpu:rss_sampled_by_parent+ru_maxrss_above_loaded"


class PointFailure(Exception):
    """Ends a point with a status other than ok (timeout, oom, error) and a one-line reason."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


class MeasuredRegion:
    """Marks where the measured runs begin and end; see the module docstring for what is measured."""

    def __init__(self, spec: PointSpec):
        self.cuda = spec.device.startswith("cuda")
        self.cuda_memory = CudaPeakMemory(spec.device) if self.cuda else None
        self.method = CudaPeakMemory.method if self.cuda else CPU_METHOD
        self.path = Path(spec.region_path) if spec.region_path else None
        self.baseline = 0
        self._maxrss_before = 0

    def begin(self, memory_limit: int | None) -> None:
        gc.collect()
        if self.cuda:
            self.baseline = self.cuda_memory.reset()
            if memory_limit:
                torch = self.cuda_memory.torch
                total = torch.cuda.get_device_properties(self.cuda_memory.device).total_memory
                torch.cuda.set_per_process_memory_fraction(min(1.0, (self.baseline + memory_limit) / total),
                                                           self.cuda_memory.device)
            return
        malloc_trim()
        self.baseline, self._maxrss_before = rss_bytes(), maxrss_bytes()
        if memory_limit:
            import psutil

            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            cap = psutil.Process().memory_info().vms + memory_limit + ADDRESS_SPACE_SLACK
            resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
        if self.path is not None:  # the launcher starts sampling once this file exists
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"baseline": self.baseline}))
            os.replace(tmp, self.path)

    def end(self) -> dict:
        """Memory fields of the row (on CPU the launcher raises peak_total_bytes to its sampled peak)."""
        if self.cuda:
            total = self.cuda_memory.peak_total()
        else:
            maxrss = maxrss_bytes()
            total = max(rss_bytes(), maxrss if maxrss > self._maxrss_before else 0)
            if self.path is not None:
                self.path.with_suffix(".end").touch()
        return {"peak_mem_bytes": max(0, total - self.baseline), "peak_total_bytes": total,
                "baseline_bytes": self.baseline}

    def release(self) -> None:
        if not self.cuda:
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


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
    region = MeasuredRegion(spec)
    info["mem_method"] = region.method
    if spec.loaded_path:
        Path(spec.loaded_path).touch()  # the parent starts the budget clock now
    clock = Clock(spec.time_budget_s)
    vocab = vocab_size(backend)
    try:
        if spec.scenario == "prefill":
            measured = measure_prefill(backend, spec, region, clock, vocab)
        elif spec.scenario == "generate":
            measured = measure_generate(backend, spec, region, clock, vocab)
        else:
            raise PointFailure("error", f"unknown scenario {spec.scenario!r}")
    except BaseException as exc:
        region.release()  # room to report the failure
        if isinstance(exc, PointFailure):
            exc.info = info
            raise
        status = "oom" if is_oom(exc) else "error"
        failure = PointFailure(status, one_line(exc))
        failure.info = info
        raise failure from exc
    finally:
        region.release()
    return {**info, **measured, "status": "ok", "error": ""}


def measure_prefill(backend, spec: PointSpec, region: MeasuredRegion, clock: Clock, vocab: int) -> dict:
    """One forward pass over T tokens (backend.start: RWKV chunked parallel, transformers one pass)."""
    ids = random_ids(spec.seq_len, vocab, spec.seed)
    for _ in range(max(0, spec.warmup)):
        out = backend.start(ids[:min(spec.seq_len, WARMUP_PREFILL_TOKENS)])
        out = None  # noqa: F841 - drop the cache before measuring
    sync(backend.device)
    region.begin(spec.memory_limit_bytes)
    times = []
    out = None
    for _ in range(max(1, spec.repeats)):
        out = None  # the previous pass's cache must not be alive during this one
        with latency(backend.device) as timing:
            out = backend.start(ids)
        times.append(timing.seconds)
        if clock.over():
            raise PointFailure("timeout", f"exceeded the time budget of {spec.time_budget_s:g} s "
                                          f"(one pass took {times[-1]:.3g} s)")
        if clock.elapsed() + times[-1] > spec.time_budget_s:
            break  # another repeat would not fit in the budget
    mem = region.end()
    out = None  # noqa: F841
    times.sort()
    median = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    return {"latency_s": median, "latency_min_s": times[0], "latency_max_s": times[-1], "repeats": len(times),
            "tokens_per_s": spec.seq_len / median if median > 0 else None, **mem}


def greedy(logits) -> int:
    return int(logits.argmax())


def measure_generate(backend, spec: PointSpec, region: MeasuredRegion, clock: Clock, vocab: int) -> dict:
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
    region.begin(spec.memory_limit_bytes)
    cuda = str(backend.device).startswith("cuda")
    with latency(backend.device) as prompt_timing:
        logits, cache = backend.start(prompt)
        token = greedy(logits)
    prompt_s = prompt_timing.seconds
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
    mem = region.end()
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
