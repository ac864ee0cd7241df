"""The serve scenario's report: batched.md / batched.csv (llama.cpp's llama-batched-bench columns), capacity.md
(sequences that fit the memory budget at each context T), the bandwidth each decode step reaches, two figures,
and the section summary.md gets. From serving.csv and meta.json only."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..report.figures import finish_axes, pyplot, save_figure
from ..report.tables import MISSING, fmt, markdown_table
from .capacity import capacity_batch, measured_bytes_per_sequence
from .figures import PALETTE, log_axes, title
from .store import FAILED
from .table1 import fmt_bytes

GIB = 2 ** 30
# llama.cpp's llama-batched-bench: PP prompt tokens and TG generated tokens per sequence, B sequences, N_KV the
# tokens held in all caches at the end, T_ times in s, S_ speeds in tokens/s (PP: B x PP / T_PP, TG: B x TG / T_TG,
# the last two over the whole run)
BATCHED_COLUMNS = ["model", "PP", "TG", "B", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s", "T s", "S t/s",
                   "prefill"]


def ok_rows(serving: pd.DataFrame) -> pd.DataFrame:
    return serving[serving["status"] == "ok"] if not serving.empty else serving


def batched_rows(serving: pd.DataFrame) -> list[dict]:
    """One llama-batched-bench row per ok serve point; S_PP and S only where B prompts were prefilled (copies:
    one prefill and a copy, not comparable)."""
    out = []
    for r in ok_rows(serving).sort_values(["model", "seq_len", "batch"], kind="stable").itertuples():
        B, PP, TG = int(r.batch), int(r.seq_len), int(r.steps)
        t_tg = B * TG / r.decode_tokens_per_s
        total = r.prefill_s + t_tg
        distinct = r.prefill == "distinct"
        out.append({"model": r.model, "PP": PP, "TG": TG, "B": B, "N_KV": B * (PP + TG),
                    "T_PP s": round(r.prefill_s, 4), "S_PP t/s": round(B * PP / r.prefill_s, 2) if distinct else None,
                    "T_TG s": round(t_tg, 4), "S_TG t/s": round(r.decode_tokens_per_s, 2),
                    "T s": round(total, 4), "S t/s": round(B * (PP + TG) / total, 2) if distinct else None,
                    "prefill": r.prefill})
    return out


def capacity_rows(serving: pd.DataFrame, budget: float | None) -> list[dict]:
    """Per (model, T): bytes per sequence (measured, and analytic), the largest B that fits `budget`, whether
    a run confirmed it, and the aggregate decode tokens/s there."""
    out = []
    if serving.empty:
        return out
    for (model, T), rows in serving.groupby(["model", "seq_len"], sort=False):
        ok = ok_rows(rows)
        measured = measured_bytes_per_sequence(rows[rows["role"] != "capacity"]) or measured_bytes_per_sequence(rows)
        analytic = pd.to_numeric(rows["state_bytes"], errors="coerce").dropna()
        analytic = float(analytic.iloc[0]) if len(analytic) else None
        per_seq = measured[0] if measured else analytic
        B = capacity_batch(budget, per_seq)
        row = {"model": model, "family": rows["family"].iloc[0], "T": int(T),
               "bytes/seq measured": fmt_bytes(measured[0]) if measured else MISSING,
               "measured as": measured[1] if measured else MISSING,
               "bytes/seq analytic": fmt_bytes(analytic) if analytic else MISSING,
               "measured / analytic": fmt(measured[0] / analytic, ".3f") if measured and analytic else MISSING,
               "states alone / analytic": states_ratio(rows, analytic),
               "largest B": B, "basis": "measured" if measured else "analytic"}
        tried = rows[(rows["batch"] == B) & (rows["status"] != "ok")] if B else rows.iloc[:0]
        row.update(at_capacity(ok, B, tried.iloc[-1] if len(tried) else None))
        fits = ok if B is None else ok[ok["batch"] <= B]
        last = fits.sort_values("batch").iloc[-1] if len(fits) else None
        row["_run"] = (int(last["batch"]), float(last["decode_tokens_per_s"])) if last is not None else None
        failed = rows[rows["status"].isin(FAILED) & (rows["batch"] <= (B or 0)) & (rows["batch"] != B)]
        if len(failed):  # a smaller B already failed: the prediction is not to be trusted as it stands
            first = failed.sort_values("batch").iloc[0]
            row["status"] += f"; B={int(first['batch']):,} ended {first['status']}"
        out.append(row)
    return out


def states_ratio(rows: pd.DataFrame, analytic: float | None) -> str:
    """The states or KV caches alone (held before the first step), per sequence, over the analytic size."""
    states = measured_bytes_per_sequence(rows[rows["role"] != "capacity"], "states_held_bytes")
    return fmt(states[0] / analytic, ".3f") if states and analytic else MISSING


def at_capacity(ok: pd.DataFrame, B: int | None, tried=None) -> dict:
    """Whether B was run (confirmed, or not: `tried`, its row), lies within the grid, or is a prediction
    beyond the largest B run."""
    if B is None:
        return {"status": "no bytes per sequence", "decode tok/s": MISSING, "_tps": None}
    if tried is not None and tried["status"] != "skipped":
        return {"status": f"not confirmed: B={B:,} ran and ended {tried['status']} ({tried['error'][:90]})",
                "decode tok/s": MISSING, "_tps": None}
    exact = ok[ok["batch"] == B]
    if len(exact):
        r = exact.iloc[-1]
        return {"status": f"confirmed: ran at B={B:,}", "decode tok/s": fmt(r["decode_tokens_per_s"], ".4g"),
                "_tps": float(r["decode_tokens_per_s"])}
    below = ok[ok["batch"] <= B].sort_values("batch")
    largest = int(ok["batch"].max()) if len(ok) else 0
    if B < largest and len(below):
        r = below.iloc[-1]
        return {"status": f"within the grid (largest B run that fits: {int(r['batch']):,})",
                "decode tok/s": f"{fmt(r['decode_tokens_per_s'], '.4g')} at B={int(r['batch']):,}",
                "_tps": float(r["decode_tokens_per_s"])}
    last = ok.sort_values("batch").iloc[-1] if len(ok) else None
    return {"status": f"predicted: beyond the largest B run ({largest:,})" if len(ok) else
            "predicted: no B ran at this T",
            "decode tok/s": (f"not run ({fmt(last['decode_tokens_per_s'], '.4g')} at B={largest:,})"
                             if last is not None else MISSING), "_tps": None}


def bandwidth_rows(serving: pd.DataFrame, points: pd.DataFrame) -> list[dict]:
    """Every decode row's bytes read per step over its step time, against the copy bandwidth."""
    rows = []
    if not points.empty and "bandwidth_gbs" in points:
        dec = points[(points["scenario"] == "decode") & (points["status"] == "ok")]
        for r in dec.dropna(subset=["bandwidth_gbs"]).itertuples():
            rows.append({"model": r.model, "T": int(r.seq_len), "B": 1, "source": "decode",
                         "MB read per step": fmt(r.step_read_bytes, ".4g", 1e-6), "step ms": fmt(r.latency_s, ".3g", 1000),
                         "GB/s": fmt(r.bandwidth_gbs, ".3g"), "of copy bandwidth": fmt(r.bandwidth_fraction, ".0%")})
    for r in ok_rows(serving).dropna(subset=["bandwidth_gbs"]).itertuples() if not serving.empty else []:
        rows.append({"model": r.model, "T": int(r.seq_len), "B": int(r.batch), "source": "serve",
                     "MB read per step": fmt(r.step_read_bytes, ".4g", 1e-6), "step ms": fmt(r.step_median_s, ".3g", 1000),
                     "GB/s": fmt(r.bandwidth_gbs, ".3g"), "of copy bandwidth": fmt(r.bandwidth_fraction, ".0%")})
    return rows


def speedups(serving: pd.DataFrame, B: int = 64) -> list[dict]:
    """Aggregate decode tokens/s at B over B = 1, per (model, T)."""
    ok = ok_rows(serving)
    out = []
    for (model, T), rows in ok.groupby(["model", "seq_len"], sort=False) if len(ok) else []:
        by_b = rows.set_index("batch")["decode_tokens_per_s"]
        if 1 in by_b and B in by_b:
            out.append({"model": model, "T": int(T), "ratio": float(by_b[B] / by_b[1])})
    return out


def budget_of(meta: dict) -> float | None:
    return (meta.get("machine") or {}).get("memory_budget_bytes")


# ---- figures ----

def figure_throughput(serving: pd.DataFrame, meta: dict, run_dir: Path) -> list[Path]:
    ok = ok_rows(serving)
    if ok.empty:
        return []
    fig, ax = pyplot().subplots(figsize=(7.5, 5))
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(dict.fromkeys(serving["model"]))}
    styles = ["-", "--", ":", "-."]
    for i, T in enumerate(sorted(ok["seq_len"].unique())):
        for model, rows in ok[ok["seq_len"] == T].groupby("model", sort=False):
            rows = rows.sort_values("batch")
            ax.plot(rows["batch"], rows["decode_tokens_per_s"], marker="o", ms=4, color=colors[model],
                    linestyle=styles[i % len(styles)], label=f"{model}, T={T:,}")
    log_axes(ax)
    ax.set_xticks(sorted(ok["batch"].unique()))  # the grid itself: a short log range may hold no decade
    finish_axes(ax, xlabel="sequences decoded together B", ylabel="aggregate decode tokens/s",
                title=title("Serving: aggregate decode throughput vs batch size", meta))
    return save_figure(fig, run_dir / "serving_throughput")


def figure_capacity(serving: pd.DataFrame, meta: dict, run_dir: Path) -> list[Path]:
    budget = budget_of(meta)
    rows = pd.DataFrame(capacity_rows(serving, budget))
    if rows.empty or not rows["largest B"].notna().any():
        return []
    fig, ax = pyplot().subplots(figsize=(7.5, 5))
    for i, (model, r) in enumerate(rows.dropna(subset=["largest B"]).groupby("model", sort=False)):
        r = r.sort_values("T")
        color = PALETTE[i % len(PALETTE)]
        ax.plot(r["T"], r["largest B"].astype(float).clip(lower=0.8), marker="o", color=color, label=model)
        predicted = r[r["status"].str.startswith("predicted")]
        ax.scatter(predicted["T"], predicted["largest B"].astype(float).clip(lower=0.8), s=70, facecolors="white",
                   edgecolors=color, zorder=3)
    log_axes(ax)
    ax.set_xticks(sorted(rows["T"].unique()))
    finish_axes(ax, xlabel="context T (tokens)", ylabel="concurrent sequences that fit",
                title=title(f"Sequences whose state or KV cache fits {budget / GIB:.3g} GiB "
                            "(hollow: predicted beyond the largest B run)", meta))
    return save_figure(fig, run_dir / "serving_capacity")


# ---- files ----

def write_tables(serving: pd.DataFrame, points: pd.DataFrame, meta: dict, run_dir: Path) -> list[Path]:
    from ..fileio import write_atomically

    batched = pd.DataFrame(batched_rows(serving), columns=BATCHED_COLUMNS)
    csv_path, md_path, cap_path = run_dir / "batched.csv", run_dir / "batched.md", run_dir / "capacity.md"
    write_atomically(csv_path, batched.to_csv(index=False))
    write_atomically(md_path, "\n".join([
        "# Batched decoding, in llama.cpp's llama-batched-bench columns", "",
        "PP: prompt tokens per sequence (the context T), TG: tokens generated per sequence (timed steps), B: "
        "sequences, N_KV = B x (PP + TG), T_PP / T_TG: prefill and decode time in s (all B), S_PP = B x PP / T_PP "
        "and S_TG = B x TG / T_TG in tokens/s, T and S over both. prefill = copies: one prompt prefilled and its "
        "state or KV cache copied B times (B x T past --prefill-token-budget), so S_PP and S are not given. "
        "Random token ids; each sequence greedy-decodes its own tokens.", "",
        markdown_table(batched.astype(object).fillna(MISSING)) if len(batched) else "No serve point succeeded.", ""]))
    budget = budget_of(meta)
    write_atomically(cap_path, "\n".join(capacity_section(serving, meta, budget, "#")) + "\n")
    return [csv_path, md_path, cap_path]


def capacity_section(serving: pd.DataFrame, meta: dict, budget: float | None, heading: str = "##") -> list[str]:
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in capacity_rows(serving, budget)]
    source = (meta.get("machine") or {}).get("memory_budget_source", "")
    gib = f"{budget / GIB:.3g} GiB" if budget else "?"
    return [f"{heading} Sequences that fit in {gib} at context T", "",
            f"Budget {gib} ({source}) for the states or KV caches beyond the loaded model. Largest B = budget / "
            "bytes per sequence, measured over the batch grid (the held memory's growth from the smallest to the "
            "largest B over their difference; held after the steps and a trim, which returns glibc's free heap and "
            "MKL's GEMM buffer pool, caches of the process bounded whatever B; what a step needs while it runs is "
            "in peak_mem_bytes; `states alone` measures the same before the first step) or, without a "
            "measurement, analytic. A B beyond the largest one run is a prediction and says so; one run to "
            "confirm it says `confirmed`.", "",
            markdown_table(rows) if rows else "No serve rows.", ""]


def render_serving(serving: pd.DataFrame, points: pd.DataFrame, meta: dict, run_dir: Path) -> list[Path]:
    """batched.csv, batched.md, capacity.md and the serving figures; the files written."""
    if serving.empty:
        return []
    return [*write_tables(serving, points, meta, run_dir), *figure_throughput(serving, meta, run_dir),
            *figure_capacity(serving, meta, run_dir)]


def summary_section(serving: pd.DataFrame, points: pd.DataFrame, meta: dict) -> list[str]:
    """summary.md's serving section: what held memory says per sequence, batching's gain, bandwidth, capacity."""
    lines = []
    machine = meta.get("machine") or {}
    copy = (machine.get("memory_bandwidth") or {}).get("copy_gbs")
    if not serving.empty:
        counts = ", ".join(f"{k} {v}" for k, v in serving["status"].value_counts().items())
        lines += ["", "## Serving many sequences", "",
                  f"serve points: {len(serving)} ({counts}); tables: [batched.md](batched.md) (llama-batched-bench "
                  "columns, [csv](batched.csv)), [capacity.md](capacity.md).", ""]
        for r in capacity_rows(serving, budget_of(meta)):
            lines.append(f"- **{r['model']}** T={r['T']:,}: {r['bytes/seq measured']} per sequence measured "
                         f"({r['measured as']}), analytic {r['bytes/seq analytic']} (ratio {r['measured / analytic']}; "
                         f"the states alone, before the first step: {r['states alone / analytic']}); "
                         f"largest B in the budget {largest(r['largest B'])} ({r['status']}); aggregate decode "
                         f"tokens/s there: {r['decode tok/s']}.")
        for s in speedups(serving):
            lines.append(f"- **{s['model']}** T={s['T']:,}: aggregate decode tokens/s at B=64 is "
                         f"{s['ratio']:.3g}x that at B=1.")
        lines += ratio_lines(serving, meta)
    bw = bandwidth_rows(serving, points)
    if bw:
        lines += ["", "## Memory bandwidth reached by decode steps", "",
                  f"Bytes a step must read (the weights it uses: all but the input embedding table, plus B states or "
                  f"KV caches) over its median time, against this machine's copy bandwidth measured in the run "
                  f"({fmt(copy, '.3g')} GB/s, {(machine.get('memory_bandwidth') or {}).get('threads')} thread(s), "
                  "STREAM Copy counting). Above 100%: the data fit in the caches.", "", markdown_table(bw)]
    return lines


def largest(B) -> str:
    return f"{int(B):,}" if B is not None else MISSING


def tokens_at(row: dict) -> tuple[float | None, str]:
    """A capacity row's aggregate decode tokens/s at its largest B, or, where that B did not run, at the largest
    B that ran within it, saying which."""
    if row["_tps"]:
        return row["_tps"], f"at B={row['largest B']:,}"
    if row["_run"]:
        B, tps = row["_run"]
        return tps, f"at B={B:,}, the largest B run (not B={row['largest B']:,})"
    return None, ""


def ratio_lines(serving: pd.DataFrame, meta: dict) -> list[str]:
    """At the longest T: each recurrent model's largest B and tokens/s against each transformer's, as ratios."""
    rows = capacity_rows(serving, budget_of(meta))
    if not rows:
        return []
    T = max(r["T"] for r in rows)
    at_t = [r for r in rows if r["T"] == T and r["largest B"]]
    out = []
    for a in (r for r in at_t if r["family"] in ("rwkv", "mamba")):
        for b in (r for r in at_t if r["family"] == "transformer"):
            (a_tps, a_at), (b_tps, b_at) = tokens_at(a), tokens_at(b)
            tps = (f"; aggregate decode tokens/s {a_tps / b_tps:.3g}x ({fmt(a_tps, '.4g')} {a_at} against "
                   f"{fmt(b_tps, '.4g')} {b_at})" if a_tps and b_tps else "; tokens/s not comparable (no B ran)")
            ratio = a["largest B"] / b["largest B"]
            times = f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.3g}"
            out.append(f"- At T={T:,}: **{a['model']}** fits {times}x as many sequences as **{b['model']}** "
                       f"({a['largest B']:,} vs {b['largest B']:,}){tps}.")
    return out
