"""Whether a fitted exponent is a finding or the run's noise: a fit over points that differ by less than what
the run measures as its noise floor says "flat within ±x", not a growth exponent.

Memory (peak_mem_bytes): every child measures its baseline, the RSS once the model is loaded and warmed up
(after malloc_trim). Over the lengths of a fit those are repeated readings of one quantity, so their spread
(max - min) is what a process and its allocator add by themselves; a peak above the baseline is the
difference of two such readings, so the floor is twice that spread, and at least MIN_MEMORY_FLOOR (RSS moves
in pages and malloc arenas). A memory fit counts when its values over the fit range differ by more than the
floor and lie on a line (R² >= MIN_R2); otherwise it is flat within ± half their range.
Time (latency_s): every point's samples spread from latency_min_s to latency_max_s (repeated passes, or decode
steps). A time fit with R² below MIN_R2 whose values over the fit range differ by less than the median of
those spreads is flat within ± half their range. Cumulative times (generate) always grow: never flat.
A change between two lengths is judged the same way: memory against the floor of the rows it comes from,
time against the two points' own spreads.
"""
from __future__ import annotations

import pandas as pd

from ..report.tables import fmt

MIB = 2 ** 20
MIN_R2 = 0.9
MIN_MEMORY_FLOOR = 1 * MIB


def numbers(df: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(df[column], errors="coerce") if column in df else pd.Series(dtype=float)


def memory_floor(rows: pd.DataFrame) -> float:
    """Bytes: twice the spread of the fitted rows' repeated baselines, at least MIN_MEMORY_FLOOR."""
    base = numbers(rows, "baseline_bytes").dropna()
    spread = float(base.max() - base.min()) if len(base) >= 2 else 0.0
    return max(2 * spread, MIN_MEMORY_FLOOR)


def time_floor(rows: pd.DataFrame) -> float:
    """Seconds: the median spread (max - min) of the fitted rows' samples."""
    spread = (numbers(rows, "latency_max_s") - numbers(rows, "latency_min_s")).dropna()
    return float(spread.median()) if len(spread) else 0.0


def flat_memory(rows: pd.DataFrame, fit) -> str | None:
    """"flat within ±x MiB" when the memory fit over `rows` is within the noise; None when it is a finding."""
    values = numbers(rows, "peak_mem_bytes").dropna()
    if fit is None or len(values) < 2:
        return None
    change = float(values.max() - values.min())
    if change > memory_floor(rows) and fit.r2 >= MIN_R2:
        return None
    return f"flat within ±{fmt(change / 2, '.2g', 1 / MIB)} MiB"


def flat_time(rows: pd.DataFrame, fit) -> str | None:
    """"flat within ±x ms" when a time fit with a low R² over `rows` is within its samples' spread."""
    values = numbers(rows, "latency_s").dropna()
    if fit is None or len(values) < 2 or fit.r2 >= MIN_R2:
        return None
    change = float(values.max() - values.min())
    if change > time_floor(rows):
        return None
    return f"flat within ±{fmt(change / 2, '.2g', 1000)} ms"


def memory_change_is_noise(first, last, rows: pd.DataFrame) -> bool:
    """Whether two points' peak_mem_bytes differ by no more than the noise floor of `rows`."""
    return abs(float(last["peak_mem_bytes"]) - float(first["peak_mem_bytes"])) <= memory_floor(rows)


def time_change_is_noise(first, last) -> bool:
    """Whether two points' latency_s differ by no more than the median spread of their samples."""
    pair = pd.DataFrame([first, last])
    return abs(float(last["latency_s"]) - float(first["latency_s"])) <= time_floor(pair)
