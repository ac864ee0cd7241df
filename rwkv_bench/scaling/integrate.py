"""Figure 7 from decode samples: the cumulative time to generate T tokens, integrated over context length.

Generating T tokens costs the sum of the per-token latencies at contexts 1..T. The decode scenario samples
that latency c(t) on the length grid; between two grid points c is taken as a power law (a straight line in
log-log, exact for c ~ t^k and within a few percent for c0 + b t), below the first point as constant, and the
sum is its integral from 0 to T, segment by segment in closed form. The paper's protocol without a KV cache
re-runs the whole sequence per token, so its c(t) is a forward over t tokens: the prefill latency at T = t.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

METHOD = ("integrated: per-token latency at context t, a power law between grid points (straight in log-log), "
          "constant below the first, summed over t = 1..T as an integral")


def samples(points: pd.DataFrame, model: str, source: str) -> pd.DataFrame:
    """(seq_len, latency) of a model's ok rows: source "decode" (mean step at context T) or "prefill" (a
    forward over T tokens, the no-cache protocol's step)."""
    if points.empty:
        return pd.DataFrame(columns=["seq_len", "latency"])
    df = points[(points["model"] == model) & (points["scenario"] == source) & (points["status"] == "ok")]
    column = "latency_mean_s" if source == "decode" and "latency_mean_s" in df else "latency_s"
    lat = pd.to_numeric(df[column], errors="coerce")
    if source == "decode" and column == "latency_mean_s":
        lat = lat.fillna(pd.to_numeric(df["latency_s"], errors="coerce"))
    out = pd.DataFrame({"seq_len": df["seq_len"].astype(float), "latency": lat}).dropna()
    out = out[(out["seq_len"] > 0) & (out["latency"] > 0)]
    return out.sort_values("seq_len").drop_duplicates("seq_len", keep="last").reset_index(drop=True)


def _segment(a: float, hi: float, c0: float, b: float, c1: float) -> float:
    """Integral from a to hi (a <= hi <= b) of the power law through (a, c0) and (b, c1)."""
    if hi <= a:
        return 0.0
    k = math.log(c1 / c0) / math.log(b / a)
    if abs(k + 1) < 1e-9:
        return c0 * a * math.log(hi / a)
    return c0 * a / (k + 1) * ((hi / a) ** (k + 1) - 1)


def cumulative(sample: pd.DataFrame, targets) -> np.ndarray:
    """The integrated cumulative time at each target T (within the sampled range; beyond the last sample
    the last latency is held constant)."""
    t = sample["seq_len"].to_numpy(float)
    c = sample["latency"].to_numpy(float)
    out = []
    for x in np.asarray(list(targets), float):
        if len(t) == 0:
            out.append(float("nan"))
            continue
        total = c[0] * min(x, t[0])
        for i in range(len(t) - 1):
            if x <= t[i]:
                break
            total += _segment(t[i], min(x, t[i + 1]), c[i], t[i + 1], c[i + 1])
        if x > t[-1]:
            total += c[-1] * (x - t[-1])
        out.append(total)
    return np.array(out)


def curve(sample: pd.DataFrame, n: int = 200) -> pd.DataFrame:
    """A dense (T, cumulative_s) curve from 1 to the longest sample, log-spaced, through every grid point."""
    if sample.empty:
        return pd.DataFrame(columns=["seq_len", "cumulative_s"])
    top = float(sample["seq_len"].max())
    xs = np.unique(np.concatenate([np.geomspace(1, top, n), sample["seq_len"].to_numpy(float)]))
    return pd.DataFrame({"seq_len": xs, "cumulative_s": cumulative(sample, xs)})


def at_grid(sample: pd.DataFrame) -> pd.DataFrame:
    """The integrated cumulative time at the sampled lengths (what Table 1's generate exponents fit)."""
    return pd.DataFrame({"seq_len": sample["seq_len"].astype(int),
                         "cumulative_s": cumulative(sample, sample["seq_len"])})


def agreement(points: pd.DataFrame, model: str) -> pd.DataFrame:
    """Integrated (decode samples) vs direct (generate) cumulative time at every ok generate length."""
    sample = samples(points, model, "decode")
    gen = points[(points["model"] == model) & (points["scenario"] == "generate") & (points["status"] == "ok")]
    gen = gen[pd.to_numeric(gen["cumulative_s"], errors="coerce") > 0].sort_values("seq_len")
    if sample.empty or gen.empty:
        return pd.DataFrame(columns=["seq_len", "direct_s", "integrated_s", "ratio"])
    direct = gen["cumulative_s"].astype(float).to_numpy()
    integrated = cumulative(sample, gen["seq_len"])
    return pd.DataFrame({"seq_len": gen["seq_len"].astype(int).to_numpy(), "direct_s": direct,
                         "integrated_s": integrated, "ratio": integrated / direct})
