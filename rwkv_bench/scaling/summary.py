"""summary.md of a scaling run: setup, models, protocol, findings, decode and Figure 7 checks, the points."""
from __future__ import annotations

import math

import pandas as pd

from ..recording import busy_warning
from ..report.tables import fmt, markdown_table, pct_change
from . import integrate
from .noise import memory_change_is_noise, memory_floor, time_change_is_noise
from .facts import model_facts, model_order, per_model, protocol_label, weights_label
from .figures import longest_curves
from .store import FAILED
from .serving_report import summary_section
from .table1 import FIT_POINTS, fit_range, exponent_rows, fmt_exponent, fmt_fit, state_section

MIB = 2 ** 20


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
            time_noise = ", within the spread of their samples" if time_change_is_noise(s, l) else ""
            mem_noise = (f": flat within the noise floor ({fmt(memory_floor(gen), '.2g', 1 / MIB)} MiB)"
                         if memory_change_is_noise(s, l, gen) else "")
            out.append(f"- **{m}** generation: per-token latency (mean of the last 10% of positions) "
                       f"{fmt(s['latency_s'], '.3g', 1000)} ms at T={s['seq_len']} vs "
                       f"{fmt(l['latency_s'], '.3g', 1000)} ms at T={l['seq_len']} "
                       f"({pct_change(l['latency_s'], s['latency_s'])}{time_noise}); peak memory above the loaded "
                       f"model {fmt(s['peak_mem_bytes'], '.3g', 1 / MIB)} → {fmt(l['peak_mem_bytes'], '.3g', 1 / MIB)} "
                       f"MiB{mem_noise}, process total {fmt(s['peak_total_bytes'], '.4g', 1 / MIB)} → "
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
            what = "cumulative-time" if r["scenario"] == "generate" else "time"
            time = (f"{what} {r['time_flat']} (T={fit_range(r['time_fit'])}, within the spread of its samples)"
                    if r["time_flat"] else
                    f"fitted {what} exponent {fmt_fit(r['time_fit'], lengths=True)}, between the two longest ok "
                    f"lengths {fmt(local.slope if local else None, '.2f')}")
            memory = (f"memory {fmt_exponent(r, 'mem', lengths=True)}, below the noise floor" if r["mem_flat"] else
                      f"memory exponent {fmt_fit(r['mem_fit'], lengths=True)}")
            out.append(f"- **{r['model']}** {protocol_label(r['scenario'], r['family'], r['kv_cache'])}{source}: "
                       f"{time}; {memory} (fits over the {FIT_POINTS} longest ok lengths).")
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


def render_summary(points, tokens, meta, figures: list[str], serving: pd.DataFrame | None = None) -> str:
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
        lines += figure7_section(points) + kv_section(points) + state_section(points)
    if serving is not None and not serving.empty or "bandwidth_gbs" in points:
        lines += summary_section(serving if serving is not None else pd.DataFrame(), points, meta)
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({name}.png) ([svg]({name}.svg))" for name in figures]
    lines += ["", "## Points", "", points_table(points), ""] if not points.empty else []
    return "\n".join(lines)
