"""Tables and figures of an uncheatable run, rebuilt from per_paper.csv and meta.json alone.

Writes (names are stable): summary.csv, pairwise.csv, summary.md, bits_per_byte.png/.svg (per-model mean
bits per byte with 95% bootstrap intervals) and, with two models or more, paired_scatter.png/.svg (the
first pair of pairwise.csv: per-paper bits per byte against each other, with the papers each wins and the
ties counted as pairwise.csv counts them, within stats.TIE_TOLERANCE).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd


from ..recording import busy_warning, read_meta, read_rows
from ..report.figures import finish_axes, pyplot, save_figure
from ..report.tables import fmt, markdown_table
from . import stats

RANDOM_MARK = " (random weights)"


def read_per_paper(run_dir: Path) -> pd.DataFrame:
    """per_paper.csv with ids kept as text ('2501.01230' must not become a float)."""
    return read_rows(run_dir / "per_paper.csv", dtype={"paper_id": str, "model": str}, keep_default_na=False,
                     na_values={"logprob_nats": [""]})


def model_order(rows: pd.DataFrame, meta: dict) -> list[str]:
    present = list(dict.fromkeys(rows["model"]))
    listed = [m for m in meta.get("model_specs", []) if m in present]
    return listed + [m for m in present if m not in listed]


def random_models(rows: pd.DataFrame, meta: dict) -> set[str]:
    out = {spec for spec, info in (meta.get("models") or {}).items() if info.get("random_weights")}
    if "random_weights" in rows:
        out |= set(rows.loc[rows["random_weights"].astype(str).str.lower() == "true", "model"])
    return out


def label(model: str, randoms: set[str]) -> str:
    return model + (RANDOM_MARK if model in randoms else "")


def where(meta: dict) -> str:
    dev = f"{meta.get('device', '?')}, {meta.get('dtype', '?')}"
    if meta.get("source") == "arxiv":
        w = meta.get("window", {})
        cats = ",".join(meta.get("categories") or []) or "all categories"
        return f"arXiv {w.get('since')}..{w.get('until')}, {cats}; {dev}"
    return f"{Path(meta.get('papers_file', '?')).name}; {dev}"


def render(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    rows = read_per_paper(run_dir)
    written: list[Path] = []
    if rows.empty:
        md = run_dir / "summary.md"
        md.write_text("# Uncheatable eval\n\nNo papers scored yet.\n")
        return [md]
    boot = meta.get("bootstrap") or {}
    n_boot, seed, level = int(boot.get("resamples", stats.DEFAULT_BOOTSTRAP)), int(boot.get("seed", 0)), \
        float(boot.get("level", stats.DEFAULT_LEVEL))
    models = model_order(rows, meta)
    randoms = random_models(rows, meta)
    summary = stats.summarize(rows, models=models, n_boot=n_boot, level=level, seed=seed)
    summary["random_weights"] = summary["model"].isin(randoms)
    pairs = stats.pairwise(rows, models=models, n_boot=n_boot, level=level, seed=seed)

    for name, table in (("summary.csv", summary), ("pairwise.csv", pairs)):
        table.to_csv(run_dir / name, index=False)
        written.append(run_dir / name)
    md = run_dir / "summary.md"
    md.write_text(markdown(summary, pairs, meta, randoms, level))
    written.append(md)
    written += figure_bits_per_byte(summary, meta, randoms, run_dir, level)
    if not pairs.empty:
        written += figure_scatter(rows, next(pairs.itertuples()), meta, randoms, run_dir)
    return written


def markdown(summary: pd.DataFrame, pairs: pd.DataFrame, meta: dict, randoms: set[str], level: float) -> str:
    pct = f"{level:.0%}"
    lines = [f"# Uncheatable eval: {where(meta)}", ""]
    if (busy := busy_warning(meta)) is not None:
        lines += [f"**{busy}**", ""]
    lines.append(f"{meta.get('papers', '?')} texts, first {meta.get('chars', '?')} characters each "
                 f"(at least {meta.get('min_chars', '?')}). Lower bits per byte is better. Intervals: "
                 f"{pct} percentile bootstrap over papers ({(meta.get('bootstrap') or {}).get('resamples', '?')} "
                 "resamples).")
    if meta.get("shortfall"):
        lines.append(f"\n**Fewer papers than asked**: {meta['shortfall']} short of {meta.get('papers_requested')}.")
    lines += ["", markdown_table([{
        "model": label(r.model, randoms), "papers": r.papers, "tokens": r.tokens,
        "mean bits/byte": fmt(r.mean_bits_per_byte, ".4f"), f"{pct} CI": interval(r.ci_low, r.ci_high),
        "pooled bits/byte": fmt(r.pooled_bits_per_byte, ".4f"), "bits/char": fmt(r.mean_bits_per_char, ".4f"),
        "compression %": fmt(r.compression_rate_pct, ".2f"), "tokens/s": fmt(r.tokens_per_s, ".1f")}
        for r in summary.itertuples()], right=SUMMARY_NUMBERS)]
    if randoms:
        lines += ["", "Models marked *(random weights)* are untrained: their scores say nothing about quality "
                  "(they only show the pipeline runs; expect about log2(vocabulary) bits per token)."]
    if len(set(summary["papers"])) > 1:
        lines += ["", "Models scored different numbers of papers (an interrupted run?): compare them with the "
                  "paired table, which uses only the papers both scored."]
    if not pairs.empty:
        lines += ["", "## Paired differences (bits/byte, a - b; negative: a is better)", "", markdown_table([{
            "a": label(p.model_a, randoms), "b": label(p.model_b, randoms), "papers": p.papers,
            "mean a - b": fmt(p.mean_diff_bits_per_byte, ".4f"), f"{pct} CI": interval(p.ci_low, p.ci_high),
            "a wins": fmt(p.a_win_share, ".0%"), "b wins": fmt(p.b_win_share, ".0%"), "ties": fmt(p.tie_share, ".0%")}
            for p in pairs.itertuples()], right=PAIR_NUMBERS),
            "", f"A paper is a tie when the two differ by at most {stats.TIE_TOLERANCE:g} bits per byte."]
    lines += ["", "## Protocol", "", str(meta.get("protocol", ""))]
    for spec, info in (meta.get("models") or {}).items():
        lines.append(f"- `{spec}`: {info.get('implementation', '?')}; {info.get('protocol', '?')}")
    lines += ["", f"Run: {meta.get('date_utc', '?')}, git {meta.get('git_revision', '?')}, "
              f"cpu {meta.get('cpu', '?')}. Per-paper rows: per_paper.csv; texts: papers.csv.", ""]
    return "\n".join(lines)


SUMMARY_NUMBERS = ("papers", "tokens", "mean bits/byte", "pooled bits/byte", "bits/char", "compression %", "tokens/s")
PAIR_NUMBERS = ("papers", "mean a - b", "a wins", "b wins", "ties")


def interval(low, high) -> str:
    return f"[{fmt(low, '.4f')}, {fmt(high, '.4f')}]"


def figure_bits_per_byte(summary: pd.DataFrame, meta: dict, randoms: set[str], run_dir: Path,
                         level: float) -> list[Path]:
    n = len(summary)
    fig, ax = pyplot().subplots(figsize=(8, 2.2 + 0.45 * n))
    ys = list(range(n))[::-1]
    for y, r in zip(ys, summary.itertuples()):
        rand = r.model in randoms
        ax.errorbar(r.mean_bits_per_byte, y, xerr=[[r.mean_bits_per_byte - r.ci_low], [r.ci_high - r.mean_bits_per_byte]],
                    fmt="s" if rand else "o", color="tab:gray" if rand else "tab:blue", capsize=4)
    ax.set_yticks(ys, [label(m, randoms) for m in summary["model"]])
    ax.set_ylim(-0.7, n - 0.3)
    finish_axes(ax, xlabel=f"mean bits per UTF-8 byte (lower is better)\nbars: {level:.0%} bootstrap interval over "
                f"papers", ylabel="model", title=f"Uncheatable eval, {int(summary['papers'].max())} papers\n"
                f"{where(meta)}", grid="x", legend=False, fontsize=9)
    return save_figure(fig, run_dir / "bits_per_byte")


def scatter_title(pair, meta: dict) -> str:
    """The paired scatter's title: papers each model wins and ties, as counted in pairwise.csv."""
    a_wins, b_wins, ties = (round(share * pair.papers) if pair.papers else 0
                            for share in (pair.a_win_share, pair.b_win_share, pair.tie_share))
    return (f"Per-paper bits per byte, {pair.papers} papers: {pair.model_a} lower on {a_wins}, {pair.model_b} "
            f"lower on {b_wins}, ties {ties}\n{where(meta)}")


def figure_scatter(rows: pd.DataFrame, pair, meta: dict, randoms: set[str], run_dir: Path) -> list[Path]:
    """The first pair of pairwise.csv (`pair`, a row of it): each paper's bits per byte under a and b."""
    a, b = pair.model_a, pair.model_b
    table = stats.papers_both_scored(rows, a, b)
    fig, ax = pyplot().subplots(figsize=(5.5, 5.5))
    ax.scatter(table[a], table[b], s=14, alpha=0.7)
    lo = float(min(table[a].min(), table[b].min())) if len(table) else 0.0
    hi = float(max(table[a].max(), table[b].max())) if len(table) else 1.0
    ax.plot([lo, hi], [lo, hi], color="tab:gray", lw=1, ls="--", label="equal")
    finish_axes(ax, xlabel=f"{label(a, randoms)}: bits per UTF-8 byte", ylabel=f"{label(b, randoms)}: bits per "
                "UTF-8 byte", title=scatter_title(pair, meta), grid=None, legend="lower right", fontsize=9)
    return save_figure(fig, run_dir / "paired_scatter")
