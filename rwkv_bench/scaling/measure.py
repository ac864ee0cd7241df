"""What runs inside the child process for one point: load, warm up, time, mark the measured regions.

One child measures one or more phases of the same (model, T) in order (`spec.phases`): prefill, decode and
generate share a child, the decode steps starting from the state the last prefill pass built (so a decode
sample costs no second prefill, and the direct generation it is checked against runs in the same process).
Time: `time.perf_counter`, with the device synchronised around every timed region on CUDA.
Memory (`MeasuredRegion`, one per phase):
- CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus the memory allocated
  before the measured runs (weights, warm-up leftovers).
- CPU: live memory, as resident pages. The baseline is the RSS once the model is loaded and warmed up, after
  `gc.collect()` and glibc's `malloc_trim(0)`. Each phase resets the kernel's peak-RSS mark (VmHWM, through
  /proc/self/clear_refs) when it opens and reads it when it closes, so the peak is exact, not sampled; and
  `malloc_trim(0)` hands the heap that glibc kept after free back to the OS before each phase and every
  TRIM_EVERY generate steps (never inside a timed step), so a growing sequence of forwards (the no-cache
  protocol) does not pile up freed buffers that look like memory the model needs. Decode's held memory is
  the RSS after its timed steps and a trim: the state or KV cache at T. The launcher also samples the RSS from
  outside every few ms (and enforces --memory-limit on it). Where clear_refs is not allowed, the child's
  getrusage high-water mark stands in. The weights' size is reported separately.
Warm-up: prefill runs `warmup` untimed passes over the first min(T, 1024) tokens; decode and generate run a
short prompt plus 8 decode steps. The time budget of each phase counts from its start (warm-up and loading
excluded); the launcher allows the child the sum.
"""
from __future__ import annotations

import gc
import json
import math
import os
import re
import resource
import time
from functools import partial
from pathlib import Path

from ..allocator import trim
from ..trackers import CudaPeakMemory, latency, maxrss_bytes, peak_rss_bytes, reset_peak_rss, rss_bytes, sync
from .phase_tools import PointFailure, held_now, median, random_ids, timed_steps
from .points import PointSpec, region_files
from .store import kv_label

WARMUP_PREFILL_TOKENS = 1024
WARMUP_DECODE_STEPS = 8
# Generation hands freed heap back every TRIM_EVERY steps, not after each: the pages a trim returns are
# faulted in again (and zeroed) by the next step, which cost tiny models 10-40% per step when every step
# was followed by a trim, and not by the same amount in every phase (integrated vs direct Figure 7 then
# disagreed by 15-30%). Once every 64 steps that cost is spread to well under 1%.
TRIM_EVERY = 64
# RLIMIT_AS is only a safety net under --memory-limit (the launcher enforces the limit on sampled RSS):
# address space counts thread stacks and malloc arenas that are reserved, not used.
ADDRESS_SPACE_SLACK = 2 * 1024 ** 3
OOM_PATTERNS = re.compile(r"out of memory|can't allocate memory|cannot allocate memory|not enough memory|"
                          r"bad_alloc|memoryerror|failed to allocate", re.IGNORECASE)
CPU_METHOD = "cpu:peak_rss_vmhwm_per_phase+parent_sampled_above_loaded,malloc_trim_per_phase+every_64_generate_steps"
CPU_METHOD_FALLBACK = "cpu:rss_sampled_by_parent+ru_maxrss_above_loaded,malloc_trim_per_phase+every_64_generate_steps"


class MeasuredRegion:
    """Marks where one phase's measured runs begin and end; see the module docstring for what is measured."""

    def __init__(self, spec: PointSpec, phase: str):
        self.cuda = spec.device.startswith("cuda")
        self.cuda_memory = CudaPeakMemory(spec.device) if self.cuda else None
        self.method = CudaPeakMemory.method if self.cuda else CPU_METHOD
        self.files = region_files(spec.region_path, phase) if spec.region_path else None
        self.baseline = 0
        self._maxrss_before = 0
        self._hwm = False

    def begin(self, memory_limit: int | None, baseline: int | None = None) -> None:
        """Open the region; `baseline` (CPU): the RSS to count from, when it is not the current one (decode
        counts the state its prefill built, so it counts from the loaded model, before that prefill)."""
        gc.collect()
        if self.cuda:
            self.baseline = self.cuda_memory.reset() if baseline is None else baseline
            if baseline is not None:
                self.cuda_memory.torch.cuda.reset_peak_memory_stats(self.cuda_memory.device)
            if memory_limit:
                torch = self.cuda_memory.torch
                total = torch.cuda.get_device_properties(self.cuda_memory.device).total_memory
                torch.cuda.set_per_process_memory_fraction(min(1.0, (self.baseline + memory_limit) / total),
                                                           self.cuda_memory.device)
            return
        trim()
        self.baseline = rss_bytes() if baseline is None else baseline
        self._hwm = reset_peak_rss()
        self.method = CPU_METHOD if self._hwm else CPU_METHOD_FALLBACK
        self._maxrss_before = maxrss_bytes()
        if memory_limit:
            import psutil

            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            cap = psutil.Process().memory_info().vms + memory_limit + ADDRESS_SPACE_SLACK
            resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
        if self.files is not None:  # the launcher samples while the begin file exists and the end file does not
            begin = self.files[0]
            tmp = begin.with_suffix(".tmp")
            tmp.write_text(json.dumps({"baseline": self.baseline}))
            os.replace(tmp, begin)

    def end(self) -> dict:
        """Memory fields of the row (on CPU the launcher raises peak_total_bytes to its sampled peak)."""
        if self.cuda:
            total = self.cuda_memory.peak_total()
        else:
            hwm = peak_rss_bytes() if self._hwm else None
            if hwm is not None:
                total = max(hwm, rss_bytes())
            else:
                maxrss = maxrss_bytes()
                total = max(rss_bytes(), maxrss if maxrss > self._maxrss_before else 0)
            if self.files is not None:
                self.files[1].touch()
        return {"peak_mem_bytes": max(0, total - self.baseline), "peak_total_bytes": total,
                "baseline_bytes": self.baseline, "mem_method": self.method}

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


def vocab_size(backend) -> int:
    config = getattr(getattr(backend, "model", None), "config", None)
    return int(getattr(config, "vocab_size", None) or 1000)


def run_point(spec: PointSpec, save=None) -> dict:
    """Measure the phases of one point. Returns {"info": ..., "phases": {phase: row fields}}; a phase that
    fails has status oom / timeout / error (a decode after a failed prefill fails with it). `save(result)`
    is called after each phase, so a child killed later still reports the phases it finished."""
    import torch

    from ..backends import resolve

    t_start = time.perf_counter()
    if spec.wkv:  # the parent checked the kernel once: a child never falls back to the reference unasked
        from ..ops.wkv import ENV_VAR

        os.environ[ENV_VAR] = spec.wkv
    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    dtype = getattr(torch, spec.dtype)
    needed = max(context_needed(spec, phase) for phase in spec.phases)
    backend = resolve(spec.model, device=spec.device, dtype=dtype, tokenizer=spec.tokenizer,
                      max_positions=needed + 8, kv_cache=spec.kv_cache, chunk_size=spec.chunk_size,
                      seed=spec.seed)
    load_s = time.perf_counter() - t_start
    info = {
        "family": backend.family, "implementation": backend.implementation,
        "random_weights": bool(backend.random_weights), "weights_bytes": backend.weights_bytes(),
        "step_weights_bytes": backend.step_weights_bytes(),
        "kv_cache": kv_label(backend.family, spec.kv_cache), "device": str(backend.device),
        "dtype": str(backend.dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
        "load_s": load_s, "mem_method": CudaPeakMemory.method if spec.device.startswith("cuda") else CPU_METHOD,
    }
    result = {"info": info, "phases": {}}
    if backend.max_context and needed > backend.max_context:
        failure = PointFailure("error", f"{needed} tokens exceed the model's context of {backend.max_context}")
        failure.info = info
        raise failure
    vocab = vocab_size(backend)
    ids = random_ids(spec.seq_len, vocab, spec.seed) if set(spec.phases) & {"prefill", "decode"} else None
    warm_up(backend, spec, ids, vocab)
    if spec.loaded_path:
        Path(spec.loaded_path).touch()  # the parent starts the budget clock now
    trim()
    baseline = rss_bytes() if not spec.device.startswith("cuda") else None
    carried = {}  # what the prefill phase leaves for decode: its last output and its time
    failed = None  # a failed prefill: the decode at T needs its state
    for phase in spec.phases:
        if failed is not None and phase == "decode":
            result["phases"][phase] = {**info, "status": failed.status,
                                       "error": f"{failed.phase} to T={spec.seq_len}: {failed}"}
            continue
        region = MeasuredRegion(spec, phase)
        clock = Clock(spec.time_budget_s)
        try:
            if phase == "prefill":
                measured = measure_prefill(backend, spec, region, clock, ids, carried)
            elif phase == "decode":
                measured = measure_decode(backend, spec, region, clock, ids, carried, baseline)
            elif phase == "generate":
                measured = measure_generate(backend, spec, region, clock, vocab)
            elif phase == "serve":
                from .serving_measure import measure_serve

                measured = measure_serve(backend, spec, region, clock, vocab, baseline)
            else:
                raise PointFailure("error", f"unknown scenario {phase!r}")
            result["phases"][phase] = {**info, **measured, "status": "ok", "error": "",
                                       "state_bytes": backend.sequence_state_bytes(phase_context(spec, phase))}
        except BaseException as exc:  # noqa: BLE001 - every failure of a phase becomes its row
            region.release()  # room to report the failure
            if isinstance(exc, KeyboardInterrupt):
                raise
            failure = exc if isinstance(exc, PointFailure) else PointFailure("oom" if is_oom(exc) else "error",
                                                                               one_line(exc))
            failure.phase = phase
            if not isinstance(exc, PointFailure):
                import traceback

                traceback.print_exception(exc)  # into the point's log file
            result["phases"][phase] = {**info, "status": failure.status, "error": str(failure)}
            failed = failure if phase == "prefill" else failed
            carried.clear()
        finally:
            region.release()
        if save is not None:
            save(result)
    return result


def phase_context(spec: PointSpec, phase: str) -> int:
    """The context a phase's state or KV cache holds: T, or the prompt and T tokens for generate."""
    return spec.seq_len + spec.prompt_len if phase == "generate" else spec.seq_len


def context_needed(spec: PointSpec, phase: str) -> int:
    if phase == "generate":
        return spec.seq_len + spec.prompt_len
    if phase == "decode":
        return spec.seq_len + 2 * spec.decode_steps + 1
    if phase == "serve":
        return spec.seq_len + spec.decode_steps + 4
    return spec.seq_len


def warm_up(backend, spec: PointSpec, ids, vocab: int) -> None:
    """Untimed: the prefill's first min(T, 1024) tokens; a short prompt and 8 decode steps."""
    if "prefill" in spec.phases or "decode" in spec.phases:
        for _ in range(max(0, spec.warmup)):
            backend.start(ids[:min(spec.seq_len, WARMUP_PREFILL_TOKENS)])  # its cache is dropped at once
    if {"decode", "generate", "serve"} & set(spec.phases):
        prompt = random_ids(spec.prompt_len, vocab, spec.seed)
        logits, cache = backend.start(prompt)
        token = greedy(logits)
        for _ in range(WARMUP_DECODE_STEPS):
            logits, cache = backend.step(token, cache)
            token = greedy(logits)
        logits = cache = None  # noqa: F841
    sync(backend.device)


def measure_prefill(backend, spec: PointSpec, region: MeasuredRegion, clock: Clock, ids,
                    carried: dict) -> dict:
    """One forward pass over T tokens (backend.start: RWKV chunked parallel, transformers one pass), repeated
    up to `repeats` times while the timed passes took less than `repeat_time_s`. The last pass's output (RWKV's
    state, a transformer's KV cache) is what a decode phase in the same child starts from."""
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
        if clock.elapsed() + times[-1] > spec.time_budget_s or sum(times) >= spec.repeat_time_s:
            break  # another repeat would not fit in the budget, or the passes so far are enough
    mem = region.end()
    if "decode" in spec.phases:
        carried.update(out=out, prefill_s=times[-1])
    out = None  # noqa: F841
    times.sort()
    med = median(times)
    return {"latency_s": med, "latency_min_s": times[0], "latency_max_s": times[-1], "repeats": len(times),
            "tokens_per_s": spec.seq_len / med if med > 0 else None, **mem}


def measure_decode(backend, spec: PointSpec, region: MeasuredRegion, clock: Clock, ids,
                   carried: dict, baseline: int | None) -> dict:
    """The cost of one generated token at context T: from the state after T tokens (the prefill phase's, or
    a prefill run here), `decode_steps` greedy steps, each timed on its own; memory counts from the loaded
    model, so it holds the state or KV cache at T. Transformers without a KV cache (the paper's protocol):
    a step is a forward over the T + 1 tokens, and steps stop once they took `repeat_time_s`.
    Then, outside the memory region, steps from a reference state at `decode_ref_len` alternate with steps
    continuing the state at T, so machine drift hits both alike (benchmarks/decode_position.py's method)."""
    T = spec.seq_len
    if carried.get("out") is None:
        with latency(backend.device) as timing:
            carried.update(out=backend.start(ids), prefill_s=None)
        carried["prefill_s"] = timing.seconds
    (logits, cache), prefill_s = carried.pop("out"), carried.pop("prefill_s")
    token = greedy(logits)
    logits = None
    no_cache = backend.family == "transformer" and not spec.kv_cache
    region.begin(spec.memory_limit_bytes, baseline=baseline)
    enough = (lambda times: sum(times) >= spec.repeat_time_s) if no_cache else None
    token, cache, times = timed_steps(partial(timed_step, backend), token, cache, spec.decode_steps, clock,
                                      f"decode steps at T={T}", enough)
    mem = region.end()
    row = {"latency_s": median(times), "latency_mean_s": sum(times) / len(times), "latency_min_s": min(times),
           "latency_max_s": max(times), "repeats": len(times), "tokens_per_s": len(times) / sum(times),
           "prompt_len": T, "prompt_s": prefill_s, **mem}
    held = held_now(backend, region, baseline if backend.device.type == "cuda" else mem["baseline_bytes"])
    if held is not None:  # what the steps left: the state or KV cache at T
        row["held_mem_bytes"] = held
    ref = spec.decode_ref_len
    if ref and ref != T:
        row.update(interleave(backend, spec, clock, cache, token, ref, len(times)))
    return row


def interleave(backend, spec: PointSpec, clock: Clock, cache, token: int, ref: int, pairs: int) -> dict:
    """Alternate steps continuing the state at T with steps from a reference state at `ref` tokens."""
    if clock.elapsed() > spec.time_budget_s:
        return {}
    logits, ref_cache = backend.start(random_ids(ref, vocab_size(backend), spec.seed + 1))
    ref_token = greedy(logits)
    logits = None
    late, early = [], []
    for _ in range(pairs):
        token, cache, late_s = timed_step(backend, token, cache)
        ref_token, ref_cache, early_s = timed_step(backend, ref_token, ref_cache)
        late.append(late_s)
        early.append(early_s)
        if clock.elapsed() + late_s + early_s > spec.time_budget_s:
            break
    return {"ref_seq_len": ref, "ref_latency_s": median(early), "interleaved_latency_s": median(late),
            "ref_steps": len(early)}


def greedy(logits) -> int:
    return int(logits.argmax())


def timed_step(backend, token: int, cache) -> tuple[int, object, float]:
    """One greedy decode step, timed on its own: (the next token, the cache, seconds). int() of the argmax
    waits for the device; on CUDA the stream is synchronised as well."""
    t0 = time.perf_counter()
    logits, cache = backend.step(token, cache)
    token = greedy(logits)
    sync(backend.device)
    return token, cache, time.perf_counter() - t0


def measure_generate(backend, spec: PointSpec, region: MeasuredRegion, clock: Clock, vocab: int) -> dict:
    """Greedy decoding of T tokens after a short random prompt; every step timed on its own (the direct
    Figure 7, against which the curve integrated from decode samples is checked)."""
    T = spec.seq_len
    prompt = random_ids(spec.prompt_len, vocab, spec.seed)
    region.begin(spec.memory_limit_bytes)
    with latency(backend.device) as prompt_timing:
        logits, cache = backend.start(prompt)
        token = greedy(logits)
    prompt_s = prompt_timing.seconds
    logits = None
    latencies = [0.0] * T
    for i in range(T):
        token, cache, latencies[i] = timed_step(backend, token, cache)
        if (i + 1) % TRIM_EVERY == 0:
            trim()  # outside the timed steps: freed heap back to the OS, so the RSS stays live memory
        if clock.over():
            raise PointFailure("timeout", f"exceeded the time budget of {spec.time_budget_s:g} s "
                                          f"after {i + 1} of {T} tokens")
    mem = region.end()
    cache = None
    tail = latencies[-max(1, math.ceil(0.1 * T)):]
    cumulative = sum(latencies)
    rows, per_row = token_rows(latencies, spec.max_token_rows)
    row = {"latency_s": sum(tail) / len(tail), "latency_min_s": min(tail), "latency_max_s": max(tail),
           "cumulative_s": cumulative, "tokens_per_s": T / cumulative if cumulative > 0 else None,
           "prompt_len": spec.prompt_len, "prompt_s": prompt_s, "positions_per_row": per_row,
           "token_rows": rows, **mem}
    if spec.check_lengths:
        row.update(figure7_check(backend, spec, clock, vocab))
    return row


def figure7_check(backend, spec: PointSpec, clock: Clock, vocab: int) -> dict:
    """Figure 7's method checked in one process: T tokens generated one by one, with decode samples at the
    grid contexts `check_lengths` (as many steps each as the decode scenario takes) interleaved between the
    generation steps, so machine drift hits both alike. `check_direct_s` sums the generation steps,
    `check_integrated_s` integrates the samples' means over the grid as the report does. Separate processes
    on a shared machine differ by 10-30% in ms/token, which a sweep's across-process comparison cannot tell
    from an error of the method. Skipped (no fields) when it would not fit in the time budget."""
    import pandas as pd

    from .integrate import cumulative

    T, lengths = spec.seq_len, sorted(spec.check_lengths)
    if clock.elapsed() > spec.time_budget_s / 2:
        return {}
    states = []
    for i, t in enumerate(lengths):
        logits, state = backend.start(random_ids(t, vocab, spec.seed + 2 + i))
        states.append([greedy(logits), state])
    samples = [[] for _ in lengths]
    total = len(lengths) * max(1, spec.decode_steps)
    logits, cache = backend.start(random_ids(spec.prompt_len, vocab, spec.seed))
    token = greedy(logits)
    logits = None
    direct, taken = 0.0, 0
    for i in range(T):
        token, cache, seconds = timed_step(backend, token, cache)
        direct += seconds
        while taken < (i + 1) * total // T:  # decode samples spread evenly over the generation, round robin
            k = taken % len(lengths)
            states[k][0], states[k][1], seconds = timed_step(backend, *states[k])
            samples[k].append(seconds)
            taken += 1
        if clock.over():
            return {}
    means = pd.DataFrame({"seq_len": lengths, "latency": [sum(s) / len(s) for s in samples]})
    (integrated,) = cumulative(means, [T])
    return {"check_direct_s": direct, "check_integrated_s": float(integrated), "check_samples": taken}


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
