"""The scaling run's figures (PNG + SVG, through rwkv_bench.report.figures.save_figure), from loaded rows only.

- prefill_latency:     forward-pass time vs T, log-log, spread over repeats as error bars
- peak_memory:         peak memory above the loaded model vs T, one panel per scenario
- decode_context:      per-token decode latency and memory vs context T (log x), the analytic KV cache and the
                       predicted memory of transformer points that were not run
- generate_cumulative: cumulative time to generate T tokens (the paper's Figure 7): integrated from the decode
                       samples (and, for the paper's no-cache protocol, from the prefill samples) to the longest
                       T, with the tokens generated one by one where they were
- generate_per_token:  per-token decode latency vs position, for each model's longest successful run
A length that did not finish (oom, timeout, error) is an x on the top edge at that length: where the run stopped.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..report.figures import finish_axes, pyplot, save_figure
from . import integrate
from .facts import label, model_order, per_model, protocol_label
from .store import FAILED

MIB = 2 ** 20
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


def measured(df: pd.DataFrame, column: str) -> bool:
    """Whether df has an ok row with a positive `column`: a log axis needs one (a run whose every point
    failed has nothing to draw)."""
    ok = df[df["status"] == "ok"]
    return column in ok and bool((pd.to_numeric(ok[column], errors="coerce") > 0).any())


def log_axes(ax, y: bool = True) -> None:
    """Log scales with plain tick labels (16, 1024, 1e+05) rather than 2x10^1."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if y:
        ax.set_yscale("log")


def title(text: str, meta: dict) -> str:
    cpu = meta.get("gpu") or meta.get("cpu") or ""
    return f"{text}\n{meta.get('device', '?')}, {meta.get('dtype', '?')}" + (f", {cpu}" if cpu else "")


def new_figure(points: pd.DataFrame, panels: int = 1):
    """A figure with `panels` axes side by side, and a colour per model (the same in every figure)."""
    fig, axes = pyplot().subplots(1, panels, figsize=(7.5 if panels == 1 else 6.5 * panels, 5), squeeze=False)
    return fig, list(axes[0]), {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(model_order(points))}


def mark_failure(ax, rows: pd.DataFrame, color: str) -> None:
    """Where the run stopped: an x on the top edge of the plot at the first length that did not finish, a
    dotted line down through the axes and its status. The curve itself ends at the last length that did;
    the failed length has no value (a timeout took at least the time budget, an oom more memory than there
    was), so drawing the x at that curve's last value would show the model finishing below the others."""
    bad = rows[rows["status"].isin(FAILED)]
    if bad.empty:
        return
    r = bad.iloc[0]
    top = ax.get_xaxis_transform()  # x in data, y in axes fractions
    ax.axvline(r["seq_len"], color=color, ls=":", lw=1)
    ax.plot([r["seq_len"]], [1.0], marker="x", ms=9, mew=2, ls="none", color=color, transform=top, clip_on=False,
            zorder=5)
    ax.annotate(f"{r['status']} at T={r['seq_len']}", (r["seq_len"], 1.0), xycoords=top, textcoords="offset points",
                xytext=(-4, -12), ha="right", fontsize=8, color=color)


def figure_prefill(points, meta, facts, run_dir) -> list[Path]:
    df = points[points["scenario"] == "prefill"]
    if not measured(df, "latency_s"):
        return []
    fig, (ax,), cmap = new_figure(points)
    for model, rows, ok in per_model(df):
        if len(ok):
            lo = (ok["latency_s"] - ok["latency_min_s"]).clip(lower=0)
            hi = (ok["latency_max_s"] - ok["latency_s"]).clip(lower=0)
            ax.errorbar(ok["seq_len"], ok["latency_s"], yerr=[lo, hi], marker="o", ms=4, capsize=2,
                        color=cmap[model], label=label(model, facts))
        mark_failure(ax, rows, cmap[model])
    log_axes(ax)
    finish_axes(ax, xlabel="sequence length T (tokens)", ylabel="prefill latency (s), median of repeats",
                title=title("Prefill: one forward pass over T tokens", meta))
    return save_figure(fig, run_dir / "prefill_latency")


def figure_memory(points, meta, facts, run_dir) -> list[Path]:
    scenarios = [s for s in ("prefill", "decode", "generate")
                 if measured(points[points["scenario"] == s], "peak_mem_bytes")]
    if not scenarios:
        return []
    fig, axes, cmap = new_figure(points, len(scenarios))
    for ax, scenario in zip(axes, scenarios):
        for model, rows, ok in per_model(points[points["scenario"] == scenario]):
            ok = ok[ok["peak_mem_bytes"].notna()]
            if len(ok):
                y = (ok["peak_mem_bytes"].clip(lower=1024)) / MIB
                ax.plot(ok["seq_len"], y, marker="o", ms=4, color=cmap[model], label=label(model, facts, scenario))
            mark_failure(ax, rows, cmap[model])
        log_axes(ax)
        finish_axes(ax, xlabel={"prefill": "sequence length T (tokens)", "decode": "context T (tokens)"}.get(
                        scenario, "tokens generated T"),
                    ylabel="peak memory above the loaded model (MiB)", title=scenario)
    method = ", ".join(sorted(set(points["mem_method"]) - {""})) if "mem_method" in points else ""
    fig.suptitle(title(f"Peak memory vs sequence length [{method}]", meta), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, run_dir / "peak_memory")


def longest_curves(points: pd.DataFrame, tokens: pd.DataFrame) -> dict:
    """model -> per-position rows of its longest ok generate point."""
    curves = {}
    if tokens.empty:
        return curves
    gen = points[(points["scenario"] == "generate") & (points["status"] == "ok")]
    for model in model_order(gen):
        T = int(gen[gen["model"] == model]["seq_len"].max())
        rows = tokens[(tokens["model"] == model) & (tokens["seq_len"] == T)].sort_values("position")
        if len(rows):
            curves[model] = rows
    return curves


def figure_decode(points, meta, facts, run_dir) -> list[Path]:
    """Per-token latency and memory at context T; transformers' analytic KV cache (dashed) and the predicted
    memory of points not run (hollow)."""
    df = points[points["scenario"] == "decode"]
    if not measured(df, "latency_s"):
        return []
    fig, (ax_t, ax_m), cmap = new_figure(points, 2)
    for model, rows, ok in per_model(df):
        color = cmap[model]
        if len(ok):
            y = ok["latency_s"] * 1000
            lo = (ok["latency_s"] - ok["latency_min_s"]).clip(lower=0) * 1000
            hi = (ok["latency_max_s"] - ok["latency_s"]).clip(lower=0) * 1000
            ax_t.errorbar(ok["seq_len"], y, yerr=[lo, hi], marker="o", ms=4, capsize=2, color=color,
                          label=label(model, facts, "decode"))
            mem = ok[ok["peak_mem_bytes"].notna()]
            ax_m.plot(mem["seq_len"], mem["peak_mem_bytes"].clip(lower=1024) / MIB, marker="o", ms=4, color=color,
                      label=f"{label(model, facts, 'decode')}: peak in a step")
            if "held_mem_bytes" in mem and mem["held_mem_bytes"].notna().any():
                held = mem[mem["held_mem_bytes"].notna()]
                ax_m.plot(held["seq_len"], held["held_mem_bytes"].clip(lower=1024) / MIB, marker="s", ms=3, lw=0.8,
                          alpha=0.7, color=color, label=f"{model}: held between steps")
        if "kv_cache_bytes" in rows:
            kv = rows[pd.to_numeric(rows["kv_cache_bytes"], errors="coerce") > 0]
            if len(kv):
                ax_m.plot(kv["seq_len"], kv["kv_cache_bytes"].astype(float) / MIB, ls="--", lw=1, color=color,
                          label=f"{model}: KV cache, 2·layers·T·d·bytes")
        if "predicted_mem_bytes" in rows:
            skipped = rows[(rows["status"] == "skipped") & (pd.to_numeric(rows["predicted_mem_bytes"],
                                                                          errors="coerce") > 0)]
            if len(skipped):
                ax_m.plot(skipped["seq_len"], skipped["predicted_mem_bytes"].astype(float) / MIB, ls="none",
                          marker="o", mfc="none", ms=7, color=color, label=f"{model}: predicted, not run")
        for ax in (ax_t, ax_m):
            mark_failure(ax, rows, color)
    for ax in (ax_t, ax_m):
        log_axes(ax)
    finish_axes(ax_t, xlabel="context T (tokens)", ylabel="per-token decode latency (ms), median; bars: min–max",
                title="latency of one generated token at context T")
    finish_axes(ax_m, xlabel="context T (tokens)", ylabel="peak memory above the loaded model (MiB)",
                title="memory while decoding at context T (state / KV cache included)")
    fig.suptitle(title("Decode: the cost of one token at context T", meta), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, run_dir / "decode_context")


def figure7_curves(points: pd.DataFrame, facts: dict) -> list[dict]:
    """The integrated Figure 7 curves: one per model from its decode samples, and for a transformer with a
    KV cache the paper's no-cache protocol from its prefill samples."""
    curves = []
    for model in model_order(points):
        f = facts.get(model, {})
        sample = integrate.samples(points, model, "decode")
        if len(sample):
            curves.append({"model": model, "source": "decode", "kv_cache": f.get("kv_cache", ""),
                           "curve": integrate.curve(sample)})
        if f.get("family") == "transformer" and f.get("kv_cache") == "true":
            sample = integrate.samples(points, model, "prefill")
            if len(sample):
                curves.append({"model": model, "source": "prefill", "kv_cache": "false",
                               "curve": integrate.curve(sample)})
    return curves


def figure_cumulative(points, tokens, meta, facts, run_dir) -> list[Path]:
    gen = points[points["scenario"] == "generate"]
    integrated = figure7_curves(points, facts)
    if not measured(gen, "cumulative_s") and not integrated:
        return []
    fig, (ax,), cmap = new_figure(points)
    fig.set_size_inches(9, 6)
    for c in integrated:
        f = facts.get(c["model"], {})
        proto = protocol_label("generate", f.get("family", ""), c["kv_cache"]).removeprefix("generate, ")
        how = "integrated from decode samples" if c["source"] == "decode" else \
            "integrated from prefill samples (a step = a forward over t tokens)"
        ax.plot(c["curve"]["seq_len"], c["curve"]["cumulative_s"], color=cmap[c["model"]],
                ls="-" if c["source"] == "decode" else ":", lw=1.8, label=f"{c['model']}, {proto}: {how}")
    curves = longest_curves(points, tokens)
    for model, rows, ok in per_model(gen):
        if model in curves:
            c = curves[model]
            c = c[c["cumulative_s"] > 0]
            ax.plot(c["position"], c["cumulative_s"], color=cmap[model], ls="--", lw=1, alpha=0.8,
                    label=f"{label(model, facts, 'generate')}, generated one by one")
        if len(ok):
            ax.scatter(ok["seq_len"], ok["cumulative_s"], color=cmap[model], s=14, zorder=4,
                       label=None if model in curves else f"{label(model, facts, 'generate')}, generated one by one")
        mark_failure(ax, rows, cmap[model])
    decode = points[points["scenario"] == "decode"]
    for model, rows, ok in per_model(decode):
        mark_failure(ax, rows, cmap[model])
    log_axes(ax)
    finish_axes(ax, xlabel="tokens generated T (context 1..T)", ylabel="cumulative decode time (s)", legend=False,
                title=title(
        "Cumulative generation time (Figure 7). Solid/dotted: Σ per-token latency at contexts 1..T, a power law "
        "between grid points\n(straight in log-log), constant below the first; dashed and dots: generated one "
        "by one", meta))
    ax.legend(fontsize=7, loc="upper left", framealpha=0.8)
    return save_figure(fig, run_dir / "generate_cumulative")


def figure_per_token(points, tokens, meta, facts, run_dir) -> list[Path]:
    curves = longest_curves(points, tokens)
    if not curves:
        return []
    fig, (ax,), cmap = new_figure(points)
    binned = False
    for model, c in curves.items():
        ms = c["latency_s"] * 1000
        binned |= bool((c["n_positions"] > 1).any())
        ax.plot(c["position"], ms, color=cmap[model], alpha=0.25, lw=0.8)
        window = max(1, len(c) // 50)
        ax.plot(c["position"], ms.rolling(window, center=True, min_periods=1).median(), color=cmap[model],
                lw=1.6, label=f"{label(model, facts, 'generate')}, T={int(c['position'].max())}")
    log_axes(ax)
    finish_axes(ax, xlabel="position (tokens generated so far)",
                ylabel="per-token decode latency (ms)" + (", mean per bin" if binned else ""),
                title=title("Per-token latency vs position (faint: raw, solid: rolling median)", meta))
    return save_figure(fig, run_dir / "generate_per_token")


def draw_all(points: pd.DataFrame, tokens: pd.DataFrame, meta: dict, facts: dict, run_dir: Path) -> list[Path]:
    """Every figure the run's rows allow; the files written."""
    return [*figure_prefill(points, meta, facts, run_dir), *figure_memory(points, meta, facts, run_dir),
            *figure_decode(points, meta, facts, run_dir), *figure_cumulative(points, tokens, meta, facts, run_dir),
            *figure_per_token(points, tokens, meta, facts, run_dir)]
