"""Uncertainty over papers: percentile bootstrap intervals, paired differences, win shares.

Papers are the unit of resampling: a model's mean bits per byte varies mostly with which papers were
drawn, so each interval answers "how different could this figure be on another draw of papers like
these?". Pairs of models are compared paper by paper (a paired bootstrap over the papers both scored),
which removes the large paper-to-paper variation that both models share.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import combinations

import numpy as np
import pandas as pd

DEFAULT_BOOTSTRAP = 10_000
DEFAULT_LEVEL = 0.95
TIE_TOLERANCE = 1e-6  # bits per byte: differences this small are float noise (same weights, two codes)
_CHUNK_CELLS = 2_000_000  # resampled values held at once


@dataclass
class Interval:
    estimate: float
    low: float
    high: float
    n: int


def _resampled_stats(n: int, n_boot: int, seed: int, stat) -> np.ndarray:
    """`stat(idx)` for n_boot index matrices drawn with replacement from range(n), chunk by chunk."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // max(n, 1))
    out = []
    for start in range(0, n_boot, rows):
        idx = rng.integers(0, n, size=(min(rows, n_boot - start), n))
        out.append(stat(idx))
    return np.concatenate(out)


def _interval(estimate: float, draws: np.ndarray, level: float, n: int) -> Interval:
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return Interval(float(estimate), float(low), float(high), n)


def mean_ci(values, *, n_boot: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL, seed: int = 0) -> Interval:
    """The mean and its percentile bootstrap interval (NaN for no data, a point for one value)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    if np.all(x == x[0]):  # one paper, or no variation: nothing to resample
        return Interval(float(x[0]), float(x[0]), float(x[0]), n)
    draws = _resampled_stats(n, n_boot, seed, lambda idx: x[idx].mean(axis=1))
    return _interval(x.mean(), draws, level, n)


def ratio_ci(numerator, denominator, *, n_boot: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL,
             seed: int = 0) -> Interval:
    """sum(numerator) / sum(denominator) (e.g. total bits / total bytes), papers resampled as pairs."""
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    n = len(a)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    estimate = a.sum() / b.sum()
    if n == 1:
        return Interval(float(estimate), float(estimate), float(estimate), 1)
    draws = _resampled_stats(n, n_boot, seed, lambda idx: a[idx].sum(axis=1) / b[idx].sum(axis=1))
    return _interval(estimate, draws, level, n)


def paired_difference(a, b, *, n_boot: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL, seed: int = 0,
                      lower_is_better: bool = True, tie_tolerance: float = TIE_TOLERANCE) -> dict:
    """Mean of a - b over papers with its paired bootstrap interval, and the share of papers each wins
    (|a - b| <= tie_tolerance counts as a tie)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    diff = a - b
    ci = mean_ci(diff, n_boot=n_boot, level=level, seed=seed)
    n = len(diff)
    tie = np.abs(diff) <= tie_tolerance
    a_better = ~tie & ((diff < 0) if lower_is_better else (diff > 0))
    b_better = ~tie & ((diff > 0) if lower_is_better else (diff < 0))
    share = (lambda m: float(m.mean())) if n else (lambda m: math.nan)
    return {"papers": n, "mean_diff": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
            "a_wins": share(a_better), "b_wins": share(b_better), "ties": share(tie)}


# ---- tables from per-paper rows ----

def summarize(rows: pd.DataFrame, *, models: list[str] | None = None, n_boot: int = DEFAULT_BOOTSTRAP,
              level: float = DEFAULT_LEVEL, seed: int = 0) -> pd.DataFrame:
    """One row per model: papers, totals, mean bits/byte with its interval, pooled bits/byte (total bits
    over total bytes) with its interval, bits/char, compression rate, throughput."""
    out = []
    for model in models or list(dict.fromkeys(rows["model"])):
        r = rows[rows["model"] == model]
        if r.empty:
            continue
        bits = -r["logprob_nats"].to_numpy(float) / math.log(2)
        bpb = mean_ci(r["bits_per_byte"], n_boot=n_boot, level=level, seed=seed)
        pooled = ratio_ci(bits, r["bytes"].to_numpy(float), n_boot=n_boot, level=level, seed=seed)
        seconds = float(r["seconds"].sum()) if "seconds" in r else math.nan
        out.append({
            "model": model,
            "random_weights": bool(r["random_weights"].astype(str).str.lower().eq("true").any())
            if "random_weights" in r else False,
            "papers": len(r),
            "tokens": int(r["tokens"].sum()),
            "bytes": int(r["bytes"].sum()),
            "logprob_nats": float(r["logprob_nats"].sum()),
            "mean_logprob_nats": float(r["logprob_nats"].mean()),
            "mean_bits_per_byte": bpb.estimate, "ci_low": bpb.low, "ci_high": bpb.high,
            "pooled_bits_per_byte": pooled.estimate, "pooled_ci_low": pooled.low, "pooled_ci_high": pooled.high,
            "mean_bits_per_char": float(r["bits_per_char"].mean()) if "bits_per_char" in r else math.nan,
            "compression_rate_pct": bpb.estimate / 8 * 100,
            "compression_ci_low": bpb.low / 8 * 100, "compression_ci_high": bpb.high / 8 * 100,
            "seconds": seconds,
            "tokens_per_s": int(r["tokens"].sum()) / seconds if seconds and seconds > 0 else math.nan,
        })
    return pd.DataFrame(out)


def pairwise(rows: pd.DataFrame, *, models: list[str] | None = None, n_boot: int = DEFAULT_BOOTSTRAP,
             level: float = DEFAULT_LEVEL, seed: int = 0) -> pd.DataFrame:
    """For every pair (a, b): over the papers both scored, mean bits/byte difference a - b with its
    paired interval, and the share of papers each wins (lower bits, i.e. log-probability closer to 0)."""
    models = models or list(dict.fromkeys(rows["model"]))
    table = rows.pivot_table(index="paper_id", columns="model", values="bits_per_byte", aggfunc="first")
    out = []
    for a, b in combinations([m for m in models if m in table.columns], 2):
        both = table[[a, b]].dropna()
        res = paired_difference(both[a], both[b], n_boot=n_boot, level=level, seed=seed)
        out.append({"model_a": a, "model_b": b, "papers": res["papers"],
                    "mean_diff_bits_per_byte": res["mean_diff"], "ci_low": res["ci_low"], "ci_high": res["ci_high"],
                    "a_win_share": res["a_wins"], "b_win_share": res["b_wins"], "tie_share": res["ties"]})
    return pd.DataFrame(out, columns=PAIRWISE_COLUMNS)


# units in the names: the difference is in bits per UTF-8 byte (a - b), the shares are fractions of papers
PAIRWISE_COLUMNS = ["model_a", "model_b", "papers", "mean_diff_bits_per_byte", "ci_low", "ci_high",
                    "a_win_share", "b_win_share", "tie_share"]


def as_dict(interval: Interval) -> dict:
    return asdict(interval)
