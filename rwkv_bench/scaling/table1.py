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
from . import integrate
from .facts import model_facts, protocol_label, weights_label
from .noise import MIN_MEMORY_FLOOR, MIN_R2, flat_memory, flat_time
from .store import state_sizes

FIT_POINTS = 4  # the longest successful lengths used for each fit
NOISE_RULE = (f"An exponent is shown only where the fitted values rise above the run's noise, else \"flat within "
              f"±x\" (x: half their range): memory when they differ by more than twice the spread of the "
              f"children's repeated baselines (at least {MIN_MEMORY_FLOOR // 2 ** 20} MiB) and lie on a line "
              f"(R² >= {MIN_R2}); time when R² >= {MIN_R2} or they differ by more than the median spread of each "
              f"point's samples (min to max).")

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
# per generated token at context T, what the Table 1 rows imply: a transformer attends over T cached keys
# (O(T d) time, a KV cache of O(T d)), or re-runs the T tokens without a cache (O(T^2 d)); RWKV O(d), O(d)
PAPER_DECODE = {("transformer", "true"): (1, 1), ("transformer", "false"): (2, 2), ("rwkv", None): (0, 0)}


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
    return "cumulative_s" if scenario == "generate" else "latency_s"


def fit_tail(df: pd.DataFrame, column: str, n: int) -> Fit | None:
    df = df[pd.to_numeric(df[column], errors="coerce") > 0].sort_values("seq_len").tail(n)
    return fit_loglog(df["seq_len"], df[column]) if len(df) >= 2 else None


def exponent_rows(points: pd.DataFrame, n: int = FIT_POINTS) -> list[dict]:
    """One row per (model, scenario) with a time and a memory exponent fitted on its longest ok points.

    generate: where the curve integrated from the decode samples reaches beyond the longest length generated
    token by token, its values at the decode grid lengths are fitted instead (`source` says which). A
    transformer with a KV cache also gets a row for the paper's no-cache protocol integrated from its prefill
    samples (a step at context t is a forward over t tokens)."""
    rows = []
    if points.empty:
        return rows
    groups = list(points.groupby(["model", "scenario"], sort=False))
    scenarios = {(m, s) for (m, s), _ in groups}
    for model in dict.fromkeys(points["model"]):  # decode samples without generate rows still give Figure 7
        if (model, "decode") in scenarios and (model, "generate") not in scenarios:
            groups.append(((model, "generate"), points[(points["model"] == model)
                                                       & (points["scenario"] == "decode")].iloc[:0]))
    for (model, scenario), group in groups:
        every = points[points["model"] == model]
        first = (group if len(group) else every).iloc[0]
        ok = every[every["status"] == "ok"]
        row = {"model": model, "scenario": scenario, "family": first.get("family", ""),
               "implementation": ok["implementation"].iloc[0] if len(ok) else first.get("implementation", ""),
               "kv_cache": str(first.get("kv_cache", "")), "random_weights": bool(ok["random_weights"].iloc[0])
               if len(ok) and "random_weights" in ok else None,
               "ok_points": int((group["status"] == "ok").sum()),
               "failed": ", ".join(f"{s}@{t}" for s, t in zip(group["status"], group["seq_len"])
                                   if s in ("oom", "timeout", "error")), "source": "measured"}
        for what, column in (("time", time_column(scenario)), ("mem", "peak_mem_bytes")):
            df = longest_ok(points, model, scenario, column, n)
            row[f"{what}_fit"] = fit_loglog(df["seq_len"], df[column]) if len(df) >= 2 else None
            flat = flat_memory if what == "mem" else flat_time if column == "latency_s" else None
            row[f"{what}_flat"] = flat(df, row[f"{what}_fit"]) if flat else None
        if scenario == "generate":
            sample = integrate.samples(points, model, "decode")
            direct = group[group["status"] == "ok"]["seq_len"]
            if len(sample) >= 2 and (direct.empty or sample["seq_len"].max() > direct.max()):
                row["time_fit"] = fit_tail(integrate.at_grid(sample), "cumulative_s", n)
                decode = longest_ok(points, model, "decode", "peak_mem_bytes", n)
                row["mem_fit"] = fit_tail(decode, "peak_mem_bytes", n)
                row["time_flat"], row["mem_flat"] = None, flat_memory(decode, row["mem_fit"])
                row["source"] = (f"integrated from decode samples (direct generation to T={int(direct.max())})"
                                 if len(direct) else "integrated from decode samples")
                row["ok_points"] = len(sample)
        rows.append(row)
        if scenario == "generate" and row["family"] == "transformer" and row["kv_cache"] == "true":
            sample = integrate.samples(points, model, "prefill")
            if len(sample) >= 2:
                rows.append({**row, "kv_cache": "false", "source": "paper's no-cache protocol, integrated from "
                                                                   "prefill samples (a step = a forward over t tokens)",
                             "time_fit": fit_tail(integrate.at_grid(sample), "cumulative_s", n),
                             "mem_fit": None, "time_flat": None, "mem_flat": None, "failed": "",
                             "ok_points": len(sample)})
    return rows


def fmt_fit(fit: Fit | None, lengths: bool = False) -> str:
    """"0.95 (R² 1.00)", with `lengths` "0.95 (R² 1.00, T=1265–100000)"; "n/a" without a fit."""
    if fit is None:
        return "n/a"
    return f"{fit.slope:.2f} (R² {fit.r2:.2f}" + (f", T={fit_range(fit)})" if lengths else ")")


def fmt_exponent(row: dict, what: str, lengths: bool = False) -> str:
    """A row's time or memory exponent, or "flat within ±x" where the fit is within the run's noise
    (noise.py)."""
    flat, fit = row.get(f"{what}_flat"), row[f"{what}_fit"]
    if flat:
        return f"{flat} (T={fit_range(fit)})" if lengths else flat
    return fmt_fit(fit, lengths)


def fit_range(fit: Fit) -> str:
    return f"{round(fit.x_min)}–{round(fit.x_max)}"


STATE_RULE = ("Analytic, from each model's configuration (`state_bytes` in points.csv): RWKV-4 5 x layers x C x 4 "
              "bytes, RWKV-7 layers x C x (head size + 2) x 4, a transformer's KV cache 2 x layers x T x kv width x "
              "bytes, Mamba its conv state (d_inner x conv kernel) plus SSM state (d_inner x state size; Mamba-2: "
              "heads x head dim x state size) per layer.")


def fmt_bytes(value: float) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} B"


def state_rows(points: pd.DataFrame) -> list[dict]:
    """Per model: the state or KV cache one sequence holds at its longest context, and per token of context."""
    facts = model_facts(points) if not points.empty else {}
    return [{"model": model, "family": facts.get(model, {}).get("family", ""),
             "per sequence": f"{fmt_bytes(s['per_sequence'])} at T={s['at_seq_len']:,}",
             "per token of context": fmt_bytes(s["per_token"]) if s["per_token"] else "0 (fixed size)",
             "bytes": s["per_sequence"]}
            for model, s in state_sizes(points).items()]


def state_section(points: pd.DataFrame, heading: str = "##") -> list[str]:
    rows = state_rows(points)
    if not rows:
        return []
    return ["", f"{heading} State or KV cache per sequence", "", STATE_RULE, "", markdown_table(rows), ""]


def render_table1(points: pd.DataFrame, meta: dict, n: int = FIT_POINTS) -> str:
    device, dtype = meta.get("device", "?"), meta.get("dtype", "?")
    measured = []
    for r in exponent_rows(points, n):
        paper = PAPER_EXPONENTS.get(r["family"])
        fit = r["time_fit"] or r["mem_fit"]
        paper_time = f"{paper[1]} ({paper[0]})" if paper else MISSING
        paper_space = f"{paper[2]}" if paper else MISSING
        if r["scenario"] == "decode" and paper:
            k = PAPER_DECODE.get((r["family"], r["kv_cache"] if r["family"] == "transformer" else None))
            paper_time, paper_space = (f"{k[0]} (per token, from {paper[0]})", f"{k[1]}") if k else (MISSING,) * 2
        measured.append({
            "model": r["model"], "weights": weights_label(r["random_weights"]), "implementation": r["implementation"],
            "scenario": protocol_label(r["scenario"], r["family"], r["kv_cache"]),
            "source": r.get("source", "measured"),
            "fit range T (points)": f"{fit_range(fit)} ({fit.n})" if fit else "n/a",
            "time exponent": fmt_exponent(r, "time"), "paper time": paper_time,
            "memory exponent": fmt_exponent(r, "mem"), "paper space": paper_space,
            "not ok": r["failed"] or MISSING})
    return "\n".join([
        "# Table 1: inference complexity, as published and as measured", "",
        "Peng et al. (2023), *RWKV: Reinventing RNNs for the Transformer Era*, Table 1 (T: sequence length, "
        "d: feature dimension, c: MEGA's chunk size, s: AFT-local's window size):", "",
        markdown_table(PAPER_TABLE1), "", f"## Measured on this machine ({device}, {dtype})", "",
        f"Exponent k of T in a fit c(T) ≈ a·T^k over the {n} longest lengths that succeeded (log-log least "
        "squares, R² its fit quality). Time: the forward pass (prefill), one decode step at context T "
        "(decode), or the cumulative decode time of T tokens (generate); memory: peak memory above the loaded "
        "model (`peak_mem_bytes`; decode: at context T, state or KV cache included). The paper's exponents are "
        "those of its Table 1 row for the model's family (per token: one less). `source`: a generate row "
        "fitted on the direct token-by-token runs says `measured`; beyond them Figure 7 is integrated from the "
        f"decode samples ({integrate.METHOD}), and the fit uses those integrated values. {NOISE_RULE}", "",
        markdown_table(measured), "",
        "Random-weight models measure speed and memory only. On a CPU with a 50k-token vocabulary the "
        "head's fixed per-token cost hides the attention term at short T, so transformer exponents approach "
        "the paper's only at long T. Transformer memory with SDPA and a KV cache is O(T d), not O(T^2).", "",
        *state_section(points)])
