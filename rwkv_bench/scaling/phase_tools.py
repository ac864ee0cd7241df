"""What both kinds of measured phase share inside a child (measure.py's prefill/decode/generate and
serving_measure.py's serve): the failure that ends a phase, random token ids, the median, the loop of timed
decode steps and the memory a phase leaves held."""
from __future__ import annotations

import statistics


class PointFailure(Exception):
    """Ends a point with a status other than ok (timeout, oom, error) and a one-line reason."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def random_ids(n: int, vocab: int, seed: int):
    """n random token ids as a 1-D int64 tensor (8 bytes a token; a list of Python ints takes 36)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed_steps(step, token, cache, steps: int, clock, what: str, enough=None):
    """Up to `steps` calls of step(token, cache) -> (token, cache, seconds); returns the last token and cache
    and the seconds of each step. Stops early when another step would pass the clock's budget, or once
    `enough(times)`; a step that ends past the budget makes the phase a timeout (`what`: "decode steps at
    T=1024", to say after how many)."""
    times = []
    for _ in range(max(1, steps)):
        token, cache, seconds = step(token, cache)
        times.append(seconds)
        if clock.over():
            raise PointFailure("timeout", f"exceeded the time budget of {clock.budget_s:g} s after "
                                          f"{len(times)} {what}")
        if clock.elapsed() + seconds > clock.budget_s or (enough is not None and enough(times)):
            break
    return token, cache, times


def held_now(backend, region, baseline: int | None) -> int | None:
    """Memory held now above the loaded model (`baseline`): on CPU the RSS once freed heap and library buffer
    pools went back to the OS (allocator.trim), on CUDA the memory allocated."""
    from ..allocator import trim
    from ..trackers import rss_bytes

    if baseline is None:
        return None
    if backend.device.type == "cuda":
        return max(0, region.cuda_memory.torch.cuda.memory_allocated(backend.device) - baseline)
    trim()
    return max(0, rss_bytes() - baseline)
