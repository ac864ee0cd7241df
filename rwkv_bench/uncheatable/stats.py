"""Uncertainty over papers: percentile bootstrap intervals, paired differences, win shares.

Papers are the unit of resampling: a model's mean bits per byte varies mostly with which papers were
drawn, so each interval answers "how different could this figure be on another draw of papers like
these?". Pairs of models are compared paper by paper (a paired bootstrap over the papers both scored),
which removes the large paper-to-paper variation that both models share.

Loss by token position (`loss_by_position`): each text's per-token bits averaged within log-spaced bins of
position, then averaged over the texts that reach the bin, with a percentile bootstrap over those texts
(texts are the unit again: tokens of one text are not independent draws).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

DEFAULT_BOOTSTRAP = 10_000
DEFAULT_LEVEL = 0.95
TIE_TOLERANCE = 1e-6  # bits per byte: differences this small are float noise (same weights, two codes)
_CHUNK_CELLS = 2_000_000  # resampled values held at once
# scipy >= 1.15 takes `rng`, older versions `random_state`
_RNG_ARG = "rng" if "rng" in inspect.signature(sps.bootstrap).parameters else "random_state"


@dataclass
class Interval:
    estimate: float
    low: float
    high: float
    n: int


def bootstrap_interval(data: tuple, statistic, estimate: float, *, n_boot: int = DEFAULT_BOOTSTRAP,
                       level: float = DEFAULT_LEVEL, seed: int = 0, paired: bool = False) -> Interval:
    """`estimate` with the percentile interval of `scipy.stats.bootstrap` over the samples in `data`
    (`statistic(*samples, axis)` vectorized; `paired`: the samples are resampled together). No data gives
    NaN; one value, or samples that do not vary, give a point (there is nothing to resample)."""
    data = tuple(np.asarray(d, dtype=float) for d in data)
    n = len(data[0])
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    if n == 1 or all(np.all(d == d[0]) for d in data):
        return Interval(float(estimate), float(estimate), float(estimate), n)
    res = sps.bootstrap(data, statistic, n_resamples=n_boot, batch=max(1, _CHUNK_CELLS // n), vectorized=True,
                        paired=paired, confidence_level=level, method="percentile",
                        **{_RNG_ARG: np.random.default_rng(seed)})
    return Interval(float(estimate), float(res.confidence_interval.low), float(res.confidence_interval.high), n)


def mean_ci(values, *, n_boot: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL, seed: int = 0) -> Interval:
    """The mean and its percentile bootstrap interval (NaN for no data, a point for one value)."""
    x = np.asarray(values, dtype=float)
    return bootstrap_interval((x,), np.mean, _mean(x), n_boot=n_boot, level=level, seed=seed)


def _mean(x: np.ndarray) -> float:
    """NaN for no values, the value itself when all are equal (no rounding), else the mean."""
    return math.nan if not len(x) else float(x[0]) if np.all(x == x[0]) else float(x.mean())


def _mean_difference(a, b, axis):
    return np.mean(a - b, axis=axis)


def ratio_ci(numerator, denominator, *, n_boot: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL,
             seed: int = 0) -> Interval:
    """sum(numerator) / sum(denominator) (e.g. total bits / total bytes), papers resampled as pairs."""
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    return bootstrap_interval((a, b), lambda a, b, axis: a.sum(axis=axis) / b.sum(axis=axis),
                              a.sum() / b.sum() if len(a) else math.nan,
                              n_boot=n_boot, level=level, seed=seed, paired=True)


def win_counts(a, b, *, lower_is_better: bool = True, tie_tolerance: float = TIE_TOLERANCE) -> tuple[int, int, int]:
    """Papers on which a is better, b is better, and ties (|a - b| <= tie_tolerance)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    tie = np.abs(diff) <= tie_tolerance
    a_better = ~tie & ((diff < 0) if lower_is_better else (diff > 0))
    return int(a_better.sum()), int((~tie & ~a_better).sum()), int(tie.sum())


def paired_difference(a, b, *, n_boot: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL, seed: int = 0,
                      lower_is_better: bool = True, tie_tolerance: float = TIE_TOLERANCE) -> dict:
    """Mean of a - b over papers with its paired bootstrap interval (papers resampled as pairs), and the share of papers each wins
    (|a - b| <= tie_tolerance counts as a tie)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    n = len(a)
    ci = bootstrap_interval((a, b), _mean_difference, _mean(a - b), n_boot=n_boot, level=level, seed=seed,
                            paired=True)
    wins = win_counts(a, b, lower_is_better=lower_is_better, tie_tolerance=tie_tolerance)
    a_wins, b_wins, ties = (c / n if n else math.nan for c in wins)
    return {"papers": n, "mean_diff": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
            "a_wins": a_wins, "b_wins": b_wins, "ties": ties}


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
    out = []
    for a, b in combinations([m for m in models if m in set(rows["model"])], 2):
        both = papers_both_scored(rows, a, b)
        res = paired_difference(both[a], both[b], n_boot=n_boot, level=level, seed=seed)
        out.append({"model_a": a, "model_b": b, "papers": res["papers"],
                    "mean_diff_bits_per_byte": res["mean_diff"], "ci_low": res["ci_low"], "ci_high": res["ci_high"],
                    "a_win_share": res["a_wins"], "b_win_share": res["b_wins"], "tie_share": res["ties"]})
    return pd.DataFrame(out, columns=PAIRWISE_COLUMNS)


def papers_both_scored(rows: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Bits per byte of models a and b (columns) on the papers both scored (rows, by paper_id)."""
    table = rows.pivot_table(index="paper_id", columns="model", values="bits_per_byte", aggfunc="first")
    return table[[a, b]].dropna()


# units in the names: the difference is in bits per UTF-8 byte (a - b), the shares are fractions of papers
PAIRWISE_COLUMNS = ["model_a", "model_b", "papers", "mean_diff_bits_per_byte", "ci_low", "ci_high",
                    "a_win_share", "b_win_share", "tie_share"]



# ---- loss by token position ----

POSITION_BINS_PER_DECADE = 8
POSITION_COLUMNS = ["model", "position_from", "position_to", "position_mid", "texts", "tokens",
                    "mean_bits_per_token", "ci_low", "ci_high"]


def position_edges(max_position: int, per_decade: int = POSITION_BINS_PER_DECADE) -> np.ndarray:
    """Integer bin edges over token positions 1..max_position, about `per_decade` per factor of ten (the first
    bins hold one position each, where the loss falls fastest); bin i is [edges[i], edges[i + 1])."""
    if max_position < 1:
        return np.array([1], dtype=int)
    n = max(2, int(math.ceil(math.log10(max_position + 1) * per_decade)) + 1)
    return np.unique(np.round(np.geomspace(1, max_position + 1, n)).astype(int))


def decade_edges(max_position: int) -> np.ndarray:
    """1, 10, 100, ... up to past `max_position`: the coarse bins of the summary table."""
    edges = [1]
    while edges[-1] <= max_position:
        edges.append(edges[-1] * 10)
    return np.array(edges)


def loss_by_position(texts: list, edges, *, n_boot: int = DEFAULT_BOOTSTRAP, level: float = DEFAULT_LEVEL,
                     seed: int = 0) -> pd.DataFrame:
    """`texts`: each text's bits per token (position 1, the token after BOS, first). One row per bin
    [position_from, position_to] holding at least one text: the texts reaching it, their tokens in it, and the
    mean over those texts of each text's mean bits in the bin, with its bootstrap interval over texts."""
    texts = [np.asarray(t, dtype=float) for t in texts]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        parts = [t[lo - 1:hi - 1] for t in texts if len(t) >= lo]
        if not parts:
            continue
        ci = mean_ci([p.mean() for p in parts], n_boot=n_boot, level=level, seed=seed)
        out.append({"position_from": int(lo), "position_to": int(hi - 1),
                    "position_mid": math.sqrt(lo * (hi - 1)), "texts": len(parts),
                    "tokens": int(sum(len(p) for p in parts)), "mean_bits_per_token": ci.estimate,
                    "ci_low": ci.low, "ci_high": ci.high})
    return pd.DataFrame(out, columns=POSITION_COLUMNS[1:])
