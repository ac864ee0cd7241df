"""`render(run_dir)`: the scaling run's figures, table1.md and summary.md, from its stored files only.

Reads points.csv, generate_tokens.csv and meta.json; never runs a model. Figures (PNG + SVG):
- prefill_latency:     forward-pass time vs T, log-log, spread over repeats as error bars
- peak_memory:         peak memory above the loaded model vs T, one panel per scenario
- decode_context:      per-token decode latency and memory vs context T (log x), the analytic KV cache and the
                       predicted memory of transformer points that were not run
- generate_cumulative: cumulative time to generate T tokens (the paper's Figure 7): integrated from the decode
                       samples (and, for the paper's no-cache protocol, from the prefill samples) to the longest
                       T, with the tokens generated one by one where they were
- generate_per_token:  per-token decode latency vs position, for each model's longest successful run
A length that did not finish (oom, timeout, error) is an x on the top edge at that length: where the run stopped.
Figures are written by rwkv_bench.report.figures.save_figure, tables by rwkv_bench.report.tables.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


from ..recording import busy_warning, read_meta, read_rows
from ..report.figures import finish_axes, pyplot, save_figure
from ..report.tables import fmt, markdown_table, pct_change
from . import integrate
from .table1 import FIT_POINTS, exponent_rows, fmt_fit, protocol_label, render_table1, weights_label

MIB = 2 ** 20
FAILED = ("oom", "timeout", "error")  # statuses of a length that did not finish
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


# ---- data ----

def as_bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def load_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    points = read_rows(run_dir / "points.csv")
    tokens = read_rows(run_dir / "generate_tokens.csv")
    if not points.empty:
        points["model"] = points["model"].astype(str)
        points["seq_len"] = points["seq_len"].astype(int)
        for col in ("family", "implementation", "kv_cache", "status", "error", "mem_method"):
            if col in points:
                points[col] = points[col].map(lambda v: "" if pd.isna(v) else str(v))
        if "random_weights" in points:
            points["random_weights"] = points["random_weights"].map(as_bool)
        points = points.drop_duplicates(["model", "scenario", "seq_len"], keep="last")
    if not tokens.empty:
        tokens["model"] = tokens["model"].astype(str)
    return points, tokens, read_meta(run_dir)


def model_order(points: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(points["model"])) if not points.empty else []


def model_facts(points: pd.DataFrame) -> dict:
    """model -> family, implementation, random_weights, kv_cache (from its first ok row, else any row)."""
    facts = {}
    for model in model_order(points):
        rows = points[points["model"] == model]
        ok = rows[rows["status"] == "ok"]
        r = (ok if len(ok) else rows).iloc[0]
        facts[model] = {"family": r.get("family", ""), "implementation": r.get("implementation", ""),
                        "random_weights": r.get("random_weights"), "kv_cache": r.get("kv_cache", "")}
    return facts


def label(model: str, facts: dict, scenario: str | None = None) -> str:
    f = facts.get(model, {})
    parts = []
    if scenario in ("generate", "decode"):
        parts.append(protocol_label("generate", f.get("family", ""), f.get("kv_cache", "")).removeprefix("generate, "))
    if f.get("random_weights"):
        parts.append("random weights")
    return f"{model} ({', '.join(parts)})" if parts else model


# ---- figures ----

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


def per_model(df: pd.DataFrame):
    """(model, its rows by length, its ok rows) for each model of df."""
    for model in model_order(df):
        rows = df[df["model"] == model].sort_values("seq_len")
        yield model, rows, rows[rows["status"] == "ok"]


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
    if df.empty:
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
    scenarios = [s for s in ("prefill", "decode", "generate") if (points["scenario"] == s).any()]
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
    if df.empty:
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
    if gen.empty and not integrated:
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


# ---- summary ----

def crossover(rwkv: str, tf: str, points: pd.DataFrame, curves: dict) -> str:
    """Where RWKV's cumulative decode time drops below the transformer's, and stays there."""
    gen = points[(points["scenario"] == "generate")]
    a = gen[(gen["model"] == rwkv) & (gen["status"] == "ok")].set_index("seq_len")["cumulative_s"]
    b_rows = gen[gen["model"] == tf]
    b = b_rows[b_rows["status"] == "ok"].set_index("seq_len")["cumulative_s"]
    common = sorted(set(a.index) & set(b.index))
    parts = []
    if common:
        lower = [T for T in common if a[T] < b[T]]
        last_not = max([T for T in common if a[T] >= b[T]], default=None)
        if last_not is None:
            parts.append(f"RWKV is lower at every common length ({common[0]}–{common[-1]})")
        elif last_not == common[-1]:
            parts.append(f"RWKV is not lower at the longest common length {common[-1]}")
        else:
            first = min(T for T in lower if T > last_not)
            parts.append(f"RWKV lower from T={first} on (still higher at T={last_not})")
    if rwkv in curves and tf in curves:
        ca, cb = curves[rwkv], curves[tf]
        n = int(min(ca["position"].max(), cb["position"].max()))
        ia = ca.set_index("position")["cumulative_s"]
        ib = cb.set_index("position")["cumulative_s"]
        grid = sorted(set(ia.index) | set(ib.index))
        grid = [p for p in grid if p <= n]
        ya = pd.Series(ia).reindex(grid).interpolate(method="index").bfill()
        yb = pd.Series(ib).reindex(grid).interpolate(method="index").bfill()
        not_lower = [p for p in grid if ya[p] >= yb[p]]
        if not not_lower:
            parts.append(f"per-token curves: lower from the first position up to {n}")
        elif not_lower[-1] >= n:
            parts.append(f"per-token curves: not lower by position {n}")
        else:
            parts.append(f"per-token curves: lower after position ≈{not_lower[-1]} (compared up to {n})")
    failed = b_rows[b_rows["status"].isin(FAILED)]
    if len(failed):
        r = failed.sort_values("seq_len").iloc[0]
        ok_a = a.index.max() if len(a) else None
        parts.append(f"{tf} did not finish T={r['seq_len']} ({r['status']})" +
                     (f"; RWKV finished up to T={ok_a}" if ok_a else ""))
    return "; ".join(parts) if parts else "no common generate lengths"


def first_and_last_tenth(rows: pd.DataFrame) -> tuple[float, float, int] | None:
    """Mean per-token latency over the first and the last 10% of positions of one run, and T.

    Within one process the two differ only by what position costs; across the sweep's processes (one per
    length) a shared machine's run-to-run drift of several percent adds to that."""
    if rows.empty:
        return None
    T = int(rows["position"].max())
    n = rows["n_positions"] if "n_positions" in rows else pd.Series(1, index=rows.index)
    tenth = max(1, math.ceil(0.1 * T))

    def mean(mask):
        weights = n[mask]
        return float((rows["latency_s"][mask] * weights).sum() / weights.sum()) if weights.sum() else float("nan")

    return mean(rows["position"] <= tenth), mean(rows["position"] > T - tenth), T


def findings(points: pd.DataFrame, tokens: pd.DataFrame, facts: dict) -> list[str]:
    out = []
    curves = longest_curves(points, tokens)
    rwkvs = [m for m in model_order(points) if facts[m]["family"] == "rwkv"]
    tfs = [m for m in model_order(points) if facts[m]["family"] == "transformer"]
    for m in rwkvs:
        gen = points[(points["model"] == m) & (points["scenario"] == "generate") & (points["status"] == "ok")]
        gen = gen.sort_values("seq_len")
        if len(gen) >= 2:
            s, l = gen.iloc[0], gen.iloc[-1]
            out.append(f"- **{m}** generation: per-token latency (mean of the last 10% of positions) "
                       f"{fmt(s['latency_s'], '.3g', 1000)} ms at T={s['seq_len']} vs "
                       f"{fmt(l['latency_s'], '.3g', 1000)} ms at T={l['seq_len']} "
                       f"({pct_change(l['latency_s'], s['latency_s'])}); peak memory above the loaded model "
                       f"{fmt(s['peak_mem_bytes'], '.3g', 1 / MIB)} → {fmt(l['peak_mem_bytes'], '.3g', 1 / MIB)} MiB, "
                       f"process total {fmt(s['peak_total_bytes'], '.4g', 1 / MIB)} → "
                       f"{fmt(l['peak_total_bytes'], '.4g', 1 / MIB)} MiB "
                       f"({pct_change(l['peak_total_bytes'], s['peak_total_bytes'])}).")
        if m in curves and (within := first_and_last_tenth(curves[m])) is not None:
            first, last, T = within
            out.append(f"- **{m}** generation within the T={T} run: {fmt(first, '.3g', 1000)} ms per token over "
                       f"the first 10% of positions, {fmt(last, '.3g', 1000)} ms over the last 10% "
                       f"({pct_change(last, first)}).")
    last_two = {(r["model"], r["scenario"], r["source"]): r["time_fit"] for r in exponent_rows(points, 2)}
    for r in sorted(exponent_rows(points), key=lambda r: (r["model"] not in rwkvs, r["model"] not in tfs)):
        if r["model"] in rwkvs + tfs and (r["time_fit"] or r["mem_fit"]):
            local = last_two.get((r["model"], r["scenario"], r["source"]))
            source = f" [{r['source']}]" if r["source"] != "measured" else ""
            out.append(f"- **{r['model']}** {protocol_label(r['scenario'], r['family'], r['kv_cache'])}{source}: "
                       f"fitted {'cumulative-time' if r['scenario'] == 'generate' else 'time'} exponent "
                       f"{fmt_fit(r['time_fit'], lengths=True)}, between the two longest ok lengths "
                       f"{fmt(local.slope if local else None, '.2f')}; memory exponent "
                       f"{fmt_fit(r['mem_fit'], lengths=True)} (fits over the {FIT_POINTS} longest ok lengths).")
    for r in rwkvs:
        for t in tfs:
            if ((points["model"] == r) & (points["scenario"] == "generate")).any() and \
                    ((points["model"] == t) & (points["scenario"] == "generate")).any():
                out.append(f"- Crossover, cumulative decode time, **{r}** vs **{t}** "
                           f"({protocol_label('generate', 'transformer', facts[t]['kv_cache'])}): "
                           f"{crossover(r, t, points, curves)}.")
    return out


def decode_rows(points: pd.DataFrame) -> list[dict]:
    """Per model: the per-token latency and memory at its shortest and longest decoded context, and the
    interleaved comparison with the reference context at the longest."""
    out = []
    for model, rows, ok in per_model(points[points["scenario"] == "decode"]):
        if ok.empty:
            continue
        s, l = ok.iloc[0], ok.iloc[-1]
        inter = MISSING_TEXT
        if pd.notna(l.get("ref_latency_s")) and l.get("ref_latency_s"):
            inter = (f"{fmt(l['interleaved_latency_s'], '.3g', 1000)} / {fmt(l['ref_latency_s'], '.3g', 1000)} ms "
                     f"at T={int(l['ref_seq_len'])} = {l['interleaved_latency_s'] / l['ref_latency_s']:.3f} "
                     f"({int(l['ref_steps'])} pairs)")
        out.append({"model": model, "shortest T": f"{s['seq_len']:,}", "ms/token": fmt(s["latency_s"], ".3g", 1000),
                    "MiB": fmt(s["peak_mem_bytes"], ".3g", 1 / MIB), "longest T": f"{l['seq_len']:,}",
                    "ms/token ": fmt(l["latency_s"], ".3g", 1000), "MiB ": fmt(l["peak_mem_bytes"], ".3g", 1 / MIB),
                    "longest / shortest (separate processes)": f"{l['latency_s'] / s['latency_s']:.3f}",
                    "interleaved at longest T: late / reference": inter})
    return out


MISSING_TEXT = "–"


def figure7_agreement(points: pd.DataFrame) -> tuple[list[dict], float | None, float | None]:
    """Integrated vs directly generated cumulative time at every common length; the largest |ratio - 1| over
    all of them, and over each model's longest (where the most steps average out a shared machine's noise)."""
    rows, worst, worst_longest = [], None, None
    for model in model_order(points):
        agree = integrate.agreement(points, model)
        for r in agree.itertuples():
            rows.append({"model": model, "T": f"{r.seq_len:,}", "generated one by one (s)": fmt(r.direct_s, ".4g"),
                         "integrated from decode samples (s)": fmt(r.integrated_s, ".4g"),
                         "integrated / direct": f"{r.ratio:.3f}"})
            worst = max(worst or 0.0, abs(r.ratio - 1))
        if len(agree):
            worst_longest = max(worst_longest or 0.0, abs(agree["ratio"].iloc[-1] - 1))
    return rows, worst, worst_longest


def one_process_agreement(points: pd.DataFrame) -> tuple[list[dict], float | None]:
    """The generate rows' one-process check (measure.figure7_check) and its largest |ratio - 1|."""
    if "check_direct_s" not in points:
        return [], None
    rows, worst = [], None
    checked = points[pd.to_numeric(points["check_direct_s"], errors="coerce") > 0]
    for model in model_order(checked):
        for r in checked[checked["model"] == model].sort_values("seq_len").itertuples():
            ratio = float(r.check_integrated_s) / float(r.check_direct_s)
            rows.append({"model": model, "T": f"{int(r.seq_len):,}",
                         "generated one by one (s)": fmt(float(r.check_direct_s), ".4g"),
                         "integrated from interleaved decode samples (s)": fmt(float(r.check_integrated_s), ".4g"),
                         "integrated / direct": f"{ratio:.3f}", "decode samples": f"{int(r.check_samples)}"})
            worst = max(worst or 0.0, abs(ratio - 1))
    return rows, worst


def kv_check(points: pd.DataFrame) -> list[dict]:
    """Measured decode memory vs the analytic KV cache, at each transformer's longest ok decode point."""
    out = []
    if "kv_cache_bytes" not in points:
        return out
    dec = points[(points["scenario"] == "decode") & (points["status"] == "ok")
                 & (pd.to_numeric(points["kv_cache_bytes"], errors="coerce") > 0)]
    for model, rows, ok in per_model(dec):
        r = ok.iloc[-1]
        held = float(r["held_mem_bytes"]) if pd.notna(r.get("held_mem_bytes")) else float("nan")
        out.append({"model": model, "T": int(r["seq_len"]), "held_bytes": held, "peak_bytes": float(r["peak_mem_bytes"]),
                    "kv_cache_bytes": float(r["kv_cache_bytes"]), "ratio": held / float(r["kv_cache_bytes"]),
                    "peak_ratio": float(r["peak_mem_bytes"]) / float(r["kv_cache_bytes"])})
    return out


def figure7_section(points: pd.DataFrame) -> list[str]:
    """summary.md's Figure 7 agreement: the one-process check where the run has one, then across processes."""
    check, worst, worst_longest = figure7_agreement(points)
    if not check:
        return []
    lines = ["", "## Figure 7: integrated vs generated one by one", "",
             f"The cumulative time to generate T tokens {integrate.METHOD}, from the decode samples, "
             "against the same tokens generated one by one (`generate`). The paper's no-cache protocol "
             "is integrated from the prefill samples (its step at context t is a forward over t tokens), "
             "so both protocols' curves come from one run."]
    same, worst_same = one_process_agreement(points)
    if not same:  # a run from before the one-process check
        lines[-1] += (f" Largest difference at each model's longest directly generated length: "
                      f"**{100 * worst_longest:.1f}%** (goal: within 10%); over all lengths: "
                      f"{100 * worst:.1f}% (a few tokens generated one by one are a few steps of a shared "
                      "machine's noise).")
        return lines + ["", markdown_table(check)]
    return lines + [
        "", "In one process (the method's check): at the longest generate length, the child "
        "generated T tokens one by one with decode samples at every grid context up to T "
        "interleaved between its steps, so machine drift hits both alike, and integrated the "
        f"samples as above. Largest difference: **{100 * worst_same:.1f}%** (goal: within 10%).",
        "", markdown_table(same), "",
        "Across processes (the sweep's decode points, each in its own child, against its "
        "generate points): largest difference at each model's longest directly generated "
        f"length {100 * worst_longest:.1f}%, over all lengths {100 * worst:.1f}% (separate "
        "processes on a shared machine differ by 10-30% in ms/token).", "", markdown_table(check)]


def kv_section(points: pd.DataFrame) -> list[str]:
    """summary.md's KV-cache memory check, at each transformer's longest decode point."""
    kv = kv_check(points)
    if not kv:
        return []
    return ["", "## KV-cache memory check", "",
            "Memory held by the decode steps at the longest context (RSS after malloc_trim, above "
            "the loaded model: `held_mem_bytes`) against the analytic KV cache "
            "2 x layers x T x d x bytes (goal: within 20%); the peak inside a step adds the step's "
            "transients (the concatenation that grows the cache, attention's working copies).", "",
            markdown_table([{"model": r["model"], "T": f"{r['T']:,}",
                             "KV cache MiB": fmt(r["kv_cache_bytes"], ".4g", 1 / MIB),
                             "held MiB": fmt(r["held_bytes"], ".4g", 1 / MIB),
                             "held / KV": f"{r['ratio']:.3f}",
                             "peak in a step MiB": fmt(r["peak_bytes"], ".4g", 1 / MIB),
                             "peak / KV": f"{r['peak_ratio']:.3f}"} for r in kv])]


def points_table(points: pd.DataFrame) -> str:
    return markdown_table([{
        "model": r.model, "scenario": r.scenario, "T": r.seq_len, "status": r.status,
        "latency_s": fmt(r.latency_s), "cumulative_s": fmt(getattr(r, "cumulative_s", None)),
        "tokens/s": fmt(r.tokens_per_s), "peak MiB above loaded": fmt(r.peak_mem_bytes, ".3g", 1 / MIB),
        "kv_cache": r.kv_cache, "note": (r.error or "")[:120]}
        for r in points.sort_values(["scenario", "model", "seq_len"], kind="stable").itertuples()])


def render_summary(points, tokens, meta, figures: list[str]) -> str:
    facts = model_facts(points)
    versions = meta.get("versions", {})
    lines = ["# Scaling: time and memory vs sequence length", "",
             f"- device: {meta.get('device')} ({meta.get('gpu') or meta.get('cpu')}), dtype {meta.get('dtype')}, "
             f"torch threads {meta.get('torch_threads')}, CPUs {meta.get('cpu_count')}",
             f"- date (UTC): {meta.get('date_utc')}; git {meta.get('git_revision')}; torch {versions.get('torch')}, "
             f"transformers {versions.get('transformers')}",
             f"- command: `{meta.get('command')}`",
             *[f"- resumed {r.get('date_utc')} (git {r.get('git_revision')}): `{r.get('command')}`"
               for r in meta.get("resumes") or []],
             f"- points: {len(points)} ({', '.join(f'{k} {v}' for k, v in points['status'].value_counts().items())})"
             if not points.empty else "- points: none", ""]
    if (busy := busy_warning(meta)) is not None:
        lines += [f"**{busy}**", ""]
    lines += ["## Models", "", markdown_table([{
        "model": m, "family": f["family"], "implementation": f["implementation"],
        "weights": weights_label(f["random_weights"], random="random (speed/memory only)"),
        "generation protocol": protocol_label("generate", f["family"], f["kv_cache"]).removeprefix("generate, ")}
        for m, f in facts.items()])]
    proto = meta.get("protocol", {})
    if proto:
        lines += ["", "## Protocol", ""] + [f"- **{k}**: {v}" for k, v in proto.items()]
    found = findings(points, tokens, facts) if not points.empty else []
    if found:
        lines += ["", "## Findings", ""] + found
    if not points.empty and (dec := decode_rows(points)):
        lines += ["", "## Decode: one token at context T", "",
                  "Median of the timed steps at each context (latency_s). The last column alternates steps from "
                  "the state at the longest T with steps from a reference state in one process, so machine drift "
                  "hits both alike; the column before compares two processes run minutes apart.", "",
                  markdown_table(dec)]
    if not points.empty:
        lines += figure7_section(points) + kv_section(points)
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({name}.png) ([svg]({name}.svg))" for name in figures]
    lines += ["", "## Points", "", points_table(points), ""] if not points.empty else []
    return "\n".join(lines)


def render(run_dir: Path) -> list[Path]:
    """Rebuild every table and figure of a scaling run from its stored CSVs and meta.json."""
    from ..errors import UserError

    run_dir = Path(run_dir)
    points, tokens, meta = load_run(run_dir)
    if points.empty:
        raise UserError(f"{run_dir / 'points.csv'} has no rows: nothing to report")
    facts = model_facts(points)
    written = []
    written += figure_prefill(points, meta, facts, run_dir)
    written += figure_memory(points, meta, facts, run_dir)
    written += figure_decode(points, meta, facts, run_dir)
    written += figure_cumulative(points, tokens, meta, facts, run_dir)
    written += figure_per_token(points, tokens, meta, facts, run_dir)
    figures = [p.stem for p in written if p.suffix == ".png"]
    table1 = run_dir / "table1.md"
    table1.write_text(render_table1(points, meta))
    summary = run_dir / "summary.md"
    summary.write_text(render_summary(points, tokens, meta, figures))
    return [table1, summary, *written]
