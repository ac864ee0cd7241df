"""Inside the child: B sequences at context T decoded together, each with its own state or KV cache.

Prefill: B different prompts of T random tokens in one batched call while B x T fits the prefill token budget
(aggregate prefill tokens/s); beyond it one prompt is prefilled and its state or KV cache repeated B times (real
copies: a decode step costs the same whatever the state holds, and the copies take the memory B sequences
take). Then two untimed batched steps, and `decode_steps` timed ones, each advancing all B rows by one
greedy token. Memory, as for decode (measure.py): from the loaded model, so the B states or KV caches count;
`held_mem_bytes` is the RSS after the steps and a trim (allocator.trim: glibc's free heap and MKL's GEMM buffer
pool go back to the OS; both are caches of the process, bounded whatever B), so what serving B sequences keeps:
their states and whatever else the steps left alive; `states_held_bytes` the same before the first step (the
states or KV caches alone); `peak_mem_bytes` adds a step's transients, its GEMM buffers among them.
"""
from __future__ import annotations

import time
from functools import partial

from ..trackers import sync
from .points import PointSpec

UNTIMED_STEPS = 2


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, linear between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def distinct_prompts(B: int, T: int, prefill_token_budget: int) -> bool:
    """Whether B sequences at T start from B prompts prefilled together, or from copies of one."""
    return B == 1 or B * T <= prefill_token_budget


def batch_step(backend, tokens, cache):
    """One token for every row; returns the next tokens (B,), the cache and the seconds it took."""
    t0 = time.perf_counter()
    logits, cache = backend.step_batch(tokens, cache)
    tokens = logits.argmax(-1)
    sync(backend.device)
    return tokens, cache, time.perf_counter() - t0


def prefill_rows(backend, spec: PointSpec, vocab: int):
    """(last tokens (B,), cache, seconds, "distinct" or "copies") of B sequences at context T."""
    import torch

    from .phase_tools import random_ids

    B, T = spec.batch, spec.seq_len
    distinct = distinct_prompts(B, T, spec.prefill_token_budget)
    ids = random_ids((B if distinct else 1) * T, vocab, spec.seed).reshape(-1, T)
    t0 = time.perf_counter()
    logits, cache = backend.start_batch(ids)
    if not distinct:
        cache = backend.repeat_cache(cache, B)
        logits = logits.expand(B, -1)
    tokens = logits.argmax(-1)
    sync(backend.device)
    seconds = time.perf_counter() - t0
    return torch.as_tensor(tokens).reshape(B), cache, seconds, "distinct" if distinct else "copies"


def measure_serve(backend, spec: PointSpec, region, clock, vocab: int, baseline: int | None) -> dict:
    from .phase_tools import held_now, median, timed_steps

    B, T = spec.batch, spec.seq_len
    region.begin(spec.memory_limit_bytes, baseline=baseline)
    tokens, cache, prefill_s, how = prefill_rows(backend, spec, vocab)
    states_held = held_now(backend, region, baseline)  # the B states or KV caches alone, before any step
    for _ in range(UNTIMED_STEPS):  # the first steps at a new batch size allocate their buffers
        tokens, cache, _ = batch_step(backend, tokens, cache)
    tokens, cache, times = timed_steps(partial(batch_step, backend), tokens, cache, spec.decode_steps, clock,
                                       f"steps of {B} sequences at T={T}")
    mem = region.end()
    row = {"batch": B, "prefill": how, "prefill_s": prefill_s,
           "prefill_tokens_per_s": B * T / prefill_s if how == "distinct" and prefill_s > 0 else None,
           "step_median_s": median(times), "step_p90_s": percentile(times, 90), "step_min_s": min(times),
           "step_max_s": max(times), "steps": len(times), "decode_tokens_per_s": B * len(times) / sum(times),
           **{k: v for k, v in mem.items() if k != "peak_total_bytes"}, "peak_total_bytes": mem["peak_total_bytes"]}
    row["held_mem_bytes"] = held_now(backend, region, baseline if baseline is not None else mem["baseline_bytes"])
    row["states_held_bytes"] = states_held
    del cache
    return row

