"""Tables and figures of an uncheatable run, rebuilt from per_paper.csv and meta.json alone.

Writes (names are stable): summary.csv, pairwise.csv, summary.md, bits_per_byte.png/.svg (per-model mean
bits per byte with 95% bootstrap intervals) and, with two models or more, paired_scatter.png/.svg (the
first two models' per-paper bits per byte against each other).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..recording import read_meta
from . import stats
from .evaluate import read_per_paper

RANDOM_MARK = " (random weights)"


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
    rows = read_per_paper(run_dir / "per_paper.csv")
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
    if len(models) >= 2:
        written += figure_scatter(rows, models[0], models[1], meta, randoms, run_dir)
    return written


def fmt(x, digits=4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(summary: pd.DataFrame, pairs: pd.DataFrame, meta: dict, randoms: set[str], level: float) -> str:
    pct = f"{level:.0%}"
    lines = [f"# Uncheatable eval: {where(meta)}", ""]
    lines.append(f"{meta.get('papers', '?')} texts, first {meta.get('chars', '?')} characters each "
                 f"(at least {meta.get('min_chars', '?')}). Lower bits per byte is better. Intervals: "
                 f"{pct} percentile bootstrap over papers ({(meta.get('bootstrap') or {}).get('resamples', '?')} "
                 "resamples).")
    if meta.get("shortfall"):
        lines.append(f"\n**Fewer papers than asked**: {meta['shortfall']} short of {meta.get('papers_requested')}.")
    lines += ["", "| model | papers | tokens | mean bits/byte | " + pct + " CI | pooled bits/byte | bits/char | "
              "compression % | tokens/s |", "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in summary.itertuples():
        lines.append(f"| {label(r.model, randoms)} | {r.papers} | {r.tokens} | {fmt(r.mean_bits_per_byte)} | "
                     f"[{fmt(r.ci_low)}, {fmt(r.ci_high)}] | {fmt(r.pooled_bits_per_byte)} | "
                     f"{fmt(r.mean_bits_per_char)} | {fmt(r.compression_rate_pct, 2)} | {fmt(r.tokens_per_s, 1)} |")
    if randoms:
        lines += ["", "Models marked *(random weights)* are untrained: their scores say nothing about quality "
                  "(they only show the pipeline runs; expect about log2(vocabulary) bits per token)."]
    if len(set(summary["papers"])) > 1:
        lines += ["", "Models scored different numbers of papers (an interrupted run?): compare them with the "
                  "paired table, which uses only the papers both scored."]
    if not pairs.empty:
        lines += ["", f"## Paired differences (bits/byte, a - b; negative: a is better)", "",
                  f"| a | b | papers | mean a - b | {pct} CI | a wins | b wins | ties |",
                  "|---|---|---:|---:|---|---:|---:|---:|"]
        for p in pairs.itertuples():
            lines.append(f"| {label(p.model_a, randoms)} | {label(p.model_b, randoms)} | {p.papers} | "
                         f"{fmt(p.mean_diff_bits_per_byte)} | [{fmt(p.ci_low)}, {fmt(p.ci_high)}] | "
                         f"{p.a_win_share:.0%} | {p.b_win_share:.0%} | {p.tie_share:.0%} |")
    if not pairs.empty:
        lines += ["", f"A paper is a tie when the two differ by at most {stats.TIE_TOLERANCE:g} bits per byte."]
    lines += ["", "## Protocol", "", str(meta.get("protocol", ""))]
    for spec, info in (meta.get("models") or {}).items():
        lines.append(f"- `{spec}`: {info.get('implementation', '?')}; {info.get('protocol', '?')}")
    lines += ["", f"Run: {meta.get('date_utc', '?')}, git {meta.get('git_revision', '?')}, "
              f"cpu {meta.get('cpu', '?')}. Per-paper rows: per_paper.csv; texts: papers.csv.", ""]
    return "\n".join(lines)


def _save(fig, run_dir: Path, stem: str) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = [run_dir / f"{stem}.png", run_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def figure_bits_per_byte(summary: pd.DataFrame, meta: dict, randoms: set[str], run_dir: Path,
                         level: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(summary)
    fig, ax = plt.subplots(figsize=(8, 2.2 + 0.45 * n))
    ys = list(range(n))[::-1]
    for y, r in zip(ys, summary.itertuples()):
        rand = r.model in randoms
        ax.errorbar(r.mean_bits_per_byte, y, xerr=[[r.mean_bits_per_byte - r.ci_low], [r.ci_high - r.mean_bits_per_byte]],
                    fmt="s" if rand else "o", color="tab:gray" if rand else "tab:blue", capsize=4)
    ax.set_yticks(ys, [label(m, randoms) for m in summary["model"]])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(f"mean bits per UTF-8 byte (lower is better)\nbars: {level:.0%} bootstrap interval over papers")
    ax.set_ylabel("model")
    ax.set_title(f"Uncheatable eval, {int(summary['papers'].max())} papers\n{where(meta)}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, run_dir, "bits_per_byte")


def figure_scatter(rows: pd.DataFrame, a: str, b: str, meta: dict, randoms: set[str], run_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = rows.pivot_table(index="paper_id", columns="model", values="bits_per_byte", aggfunc="first")[[a, b]].dropna()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(table[a], table[b], s=14, alpha=0.7)
    lo = float(min(table[a].min(), table[b].min())) if len(table) else 0.0
    hi = float(max(table[a].max(), table[b].max())) if len(table) else 1.0
    ax.plot([lo, hi], [lo, hi], color="tab:gray", lw=1, ls="--", label="equal")
    wins = float((table[a] < table[b]).mean()) if len(table) else math.nan
    ax.set_xlabel(f"{label(a, randoms)}: bits per UTF-8 byte")
    ax.set_ylabel(f"{label(b, randoms)}: bits per UTF-8 byte")
    ax.set_title(f"Per-paper bits per byte, {len(table)} papers ({a} lower on {wins:.0%})\n{where(meta)}",
                 fontsize=9)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return _save(fig, run_dir, "paired_scatter")
