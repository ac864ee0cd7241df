"""The paper's Table 1 (inference complexity) next to exponents fitted on this machine's measurements.

A cost c(T) ~ a T^k is a straight line of slope k on log-log axes, so k is fitted by least squares on
(log T, log c) over the longest lengths that succeeded (short lengths are dominated by fixed costs:
process-independent overheads, the vocabulary head). R^2 says how straight the line is; for a quantity
that is flat in T (RWKV's memory) the slope is ~0 and R^2 is low by construction (nothing to explain).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import linregress

from ..report.tables import MISSING, markdown_table

FIT_POINTS = 4  # the longest successful lengths used for each fit

# Peng et al. (2023), Table 1: inference complexity; T = sequence length, d = feature dimension,
# c = MEGA's chunk size of quadratic attention, s = the size of AFT-local's window.
PAPER_TABLE1 = pd.read_csv(io.StringIO("""Model;Time;Space
Transformer;O(T^2 d);O(T^2 + T d)
Reformer;O(T log T d);O(T log T + T d)
Performer;O(T d^2 log d);O(T d log d + d^2 log d)
Linear Transformers;O(T d^2);O(T d + d^2)
AFT-full;O(T^2 d);O(T d)
AFT-local;O(T s d);O(T d)
MEGA;O(c T d);O(c d)
RWKV (ours);O(T d);O(d)
"""), sep=";")
# the exponent of T in the paper's Time and Space columns, for the rows we measure
PAPER_EXPONENTS = {"transformer": ("Transformer", 2, 2), "rwkv": ("RWKV (ours)", 1, 0)}


@dataclass
class Fit:
    slope: float
    r2: float
    n: int
    x_min: float
    x_max: float


def fit_loglog(x, y) -> Fit | None:
    """Least-squares line through (log x, log y) (`scipy.stats.linregress`); pairs with x <= 0 or y <= 0
    are left out. Returns None with fewer than two usable pairs or a single distinct x. A y that does not
    vary is fitted exactly (R² 1)."""
    xy = pd.DataFrame({"x": pd.to_numeric(pd.Series(list(x), dtype=object), errors="coerce"),
                       "y": pd.to_numeric(pd.Series(list(y), dtype=object), errors="coerce")}).dropna()
    xy = xy[(xy.x > 0) & (xy.y > 0)]
    lx, ly = np.log(xy.x.to_numpy(float)), np.log(xy.y.to_numpy(float))
    if len(lx) < 2 or np.all(lx == lx[0]):
        return None
    fit = linregress(lx, ly)
    r2 = 1.0 if np.all(ly == ly[0]) else float(fit.rvalue) ** 2
    return Fit(float(fit.slope), r2, len(lx), math.exp(lx.min()), math.exp(lx.max()))


def longest_ok(points: pd.DataFrame, model: str, scenario: str, column: str, n: int = FIT_POINTS) -> pd.DataFrame:
    df = points[(points["model"] == model) & (points["scenario"] == scenario) & (points["status"] == "ok")]
    df = df[pd.to_numeric(df[column], errors="coerce") > 0].sort_values("seq_len")
    return df.tail(n)


def time_column(scenario: str) -> str:
    return "latency_s" if scenario == "prefill" else "cumulative_s"


def exponent_rows(points: pd.DataFrame, n: int = FIT_POINTS) -> list[dict]:
    """One row per (model, scenario) with a time and a memory exponent fitted on its longest ok points."""
    rows = []
    if points.empty:
        return rows
    for (model, scenario), group in points.groupby(["model", "scenario"], sort=False):
        first = group.iloc[0]
        ok = group[group["status"] == "ok"]
        row = {"model": model, "scenario": scenario, "family": first.get("family", ""),
               "implementation": ok["implementation"].iloc[0] if len(ok) else first.get("implementation", ""),
               "kv_cache": str(first.get("kv_cache", "")), "random_weights": bool(ok["random_weights"].iloc[0])
               if len(ok) and "random_weights" in ok else None,
               "ok_points": len(ok), "failed": ", ".join(f"{s}@{t}" for s, t in
                                                          zip(group["status"], group["seq_len"])
                                                          if s in ("oom", "timeout", "error"))}
        for what, column in (("time", time_column(scenario)), ("mem", "peak_mem_bytes")):
            df = longest_ok(points, model, scenario, column, n)
            fit = fit_loglog(df["seq_len"], df[column]) if len(df) >= 2 else None
            row[f"{what}_fit"] = fit
        rows.append(row)
    return rows


def fmt_fit(fit: Fit | None, lengths: bool = False) -> str:
    """"0.95 (R² 1.00)", with `lengths` "0.95 (R² 1.00, T=1265–100000)"; "n/a" without a fit."""
    if fit is None:
        return "n/a"
    return f"{fit.slope:.2f} (R² {fit.r2:.2f}" + (f", T={_lengths(fit)})" if lengths else ")")


def _lengths(fit: Fit) -> str:
    return f"{round(fit.x_min)}–{round(fit.x_max)}"


def protocol_label(scenario: str, family: str, kv_cache: str) -> str:
    if scenario == "prefill":
        return "prefill (one pass)"
    if family == "transformer":
        return "generate, KV cache" if kv_cache == "true" else "generate, no cache (paper)"
    return "generate, recurrent"


def weights_label(random_weights, random: str = "random") -> str:
    return random if random_weights else "trained" if random_weights is False else "?"


def render_table1(points: pd.DataFrame, meta: dict, n: int = FIT_POINTS) -> str:
    device, dtype = meta.get("device", "?"), meta.get("dtype", "?")
    measured = []
    for r in exponent_rows(points, n):
        paper = PAPER_EXPONENTS.get(r["family"])
        fit = r["time_fit"] or r["mem_fit"]
        measured.append({
            "model": r["model"], "weights": weights_label(r["random_weights"]), "implementation": r["implementation"],
            "scenario": protocol_label(r["scenario"], r["family"], r["kv_cache"]),
            "fit range T (points)": f"{_lengths(fit)} ({fit.n})" if fit else "n/a",
            "time exponent": fmt_fit(r["time_fit"]), "paper time": f"{paper[1]} ({paper[0]})" if paper else MISSING,
            "memory exponent": fmt_fit(r["mem_fit"]), "paper space": f"{paper[2]}" if paper else MISSING,
            "not ok": r["failed"] or MISSING})
    return "\n".join([
        "# Table 1: inference complexity, as published and as measured", "",
        "Peng et al. (2023), *RWKV: Reinventing RNNs for the Transformer Era*, Table 1 (T: sequence length, "
        "d: feature dimension, c: MEGA's chunk size, s: AFT-local's window size):", "",
        markdown_table(PAPER_TABLE1), "", f"## Measured on this machine ({device}, {dtype})", "",
        f"Exponent k of T in a fit c(T) ≈ a·T^k over the {n} longest lengths that succeeded (log-log least "
        "squares, R² its fit quality). Time: the forward pass (prefill) or the cumulative decode time of "
        "T tokens (generate); memory: peak memory above the loaded model (`peak_mem_bytes`). The paper's "
        "exponents are those of its Table 1 row for the model's family.", "",
        markdown_table(measured), "",
        "Random-weight models measure speed and memory only. On a CPU with a 50k-token vocabulary the "
        "head's fixed per-token cost hides the attention term at short T, so transformer exponents approach "
        "the paper's only at long T. Transformer memory with SDPA and a KV cache is O(T d), not O(T^2).", ""])
