"""Tables and figures of an uncheatable run, rebuilt from its run directory alone (read through `store`).

Writes (names are stable): summary.csv, pairwise.csv, summary.md, bits_per_byte.png/.svg (per-model mean
bits per byte with 95% bootstrap intervals) and, with two models or more, paired_scatter.png/.svg (the
first pair of pairwise.csv: per-paper bits per byte against each other, with the papers each wins and the
ties counted as pairwise.csv counts them, within stats.TIE_TOLERANCE), and, from token_logprobs.npz,
loss_by_position.csv and loss_by_position.png/.svg (mean bits per token against token position, log-spaced
bins, 95% bootstrap intervals over texts, one line per model, each transformer's context marked).
A run of several sources adds a per-source breakdown: summary_by_source.csv and pairwise_by_source.csv
(the same statistics within each source, with each model's rank), a "By source" section in summary.md,
bits_per_byte_by_source.png/.svg, the paired scatter's points coloured by source, and loss by position per
source: loss_by_position.csv gains a `source` column ("all": every text, then each source), the figure one
column of panels per source and the summary's position table a row per (source, model).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..fileio import write_atomically
from ..recording import busy_warning, read_meta
from ..report.figures import finish_axes, pyplot, save_figure
from ..report.tables import fmt, markdown_table
from . import stats
from .store import PER_PAPER, read_per_paper, read_token_logprobs

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


ALL_SOURCES = "all"  # the source of loss_by_position.csv's rows over every text
SOURCE_NAMES = {"arxiv": "arXiv", "wikipedia": "Wikipedia", "github": "GitHub", "biorxiv": "bioRxiv"}


def source_text(name: str, info: dict) -> str:
    """Where one source's texts came from, in a few words."""
    if name == "file" or "papers_file" in info and name not in SOURCE_NAMES:
        return Path(info.get("papers_file", "?")).name
    w = info.get("window", {})
    text = f"{SOURCE_NAMES.get(name, name)}"
    if name == "wikipedia" and info.get("lang"):
        text += f" ({info['lang']})"
    text += f" {w.get('since')}..{w.get('until')}"
    if name == "arxiv":
        text += ", " + (",".join(info.get("categories") or []) or "all categories")
    return text


def where(meta: dict) -> str:
    dev = f"{meta.get('device', '?')}, {meta.get('dtype', '?')}"
    if meta.get("sources"):
        return "; ".join(source_text(name, info) for name, info in meta["sources"].items()) + f"; {dev}"
    return f"{source_text(meta.get('source', 'file'), meta)}; {dev}"


def sources_of(rows: pd.DataFrame) -> list[str]:
    """The sources the rows came from, in order of appearance ([] when the rows carry none)."""
    return [s for s in dict.fromkeys(rows["source"]) if s]


def write_table(path: Path, table: pd.DataFrame) -> Path:
    write_atomically(path, table.to_csv(index=False))
    return path


def render(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    rows = read_per_paper(run_dir / PER_PAPER)
    written: list[Path] = []
    if rows.empty:
        md = run_dir / "summary.md"
        write_atomically(md, "# Uncheatable eval\n\nNo papers scored yet.\n")
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
        written.append(write_table(run_dir / name, table))
    by_source = pairs_by_source = None
    if len(sources := sources_of(rows)) > 1:
        by_source, pairs_by_source = per_source(rows, sources, models, n_boot=n_boot, level=level, seed=seed)
        by_source["random_weights"] = by_source["model"].isin(randoms)
        written.append(write_table(run_dir / "summary_by_source.csv", by_source))
        written.append(write_table(run_dir / "pairwise_by_source.csv", pairs_by_source))
    positions, decades = loss_by_position(run_dir, models, n_boot=n_boot, level=level, seed=seed,
                                          source_of=source_by_paper(rows) if len(sources) > 1 else None)
    md = run_dir / "summary.md"
    write_atomically(md, markdown(summary, pairs, meta, randoms, level, decades, by_source, pairs_by_source))
    written.append(md)
    written += figure_bits_per_byte(summary, meta, randoms, run_dir, level)
    if by_source is not None:
        written += figure_by_source(by_source, meta, randoms, run_dir, level)
    if not pairs.empty:
        written += figure_scatter(rows, next(pairs.itertuples()), meta, randoms, run_dir)
    if not positions.empty:
        written.append(write_table(run_dir / "loss_by_position.csv", positions))
        written += figure_loss_by_position(positions, meta, randoms, run_dir, level)
    return written


def per_source(rows: pd.DataFrame, sources: list[str], models: list[str], *, n_boot: int, level: float,
               seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """summary.csv's and pairwise.csv's statistics within each source, with a `source` column first and each
    model's rank within its source (1: the lowest mean bits per byte)."""
    summaries, pairs = [], []
    for source in sources:
        subset = rows[rows["source"] == source]
        present = [m for m in models if m in set(subset["model"])]
        table = stats.summarize(subset, models=present, n_boot=n_boot, level=level, seed=seed)
        table.insert(0, "rank", table["mean_bits_per_byte"].rank(method="min").astype(int))
        table.insert(0, "source", source)
        summaries.append(table.sort_values("rank", kind="stable"))
        pair = stats.pairwise(subset, models=present, n_boot=n_boot, level=level, seed=seed)
        pair.insert(0, "source", source)
        pairs.append(pair)
    return pd.concat(summaries, ignore_index=True), pd.concat(pairs, ignore_index=True)


def source_by_paper(rows: pd.DataFrame) -> dict[str, str]:
    """Each text's source, by paper_id."""
    return dict(zip(rows["paper_id"], rows["source"]))


def loss_by_position(run_dir: Path, models: list[str], *, n_boot: int, level: float, seed: int,
                     source_of: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean bits per token by token position, per model: in log-spaced bins (loss_by_position.csv, the figure)
    and in decades (the summary's table). With `source_of` (paper_id to source), a `source` column comes first:
    the rows over every text (source ALL_SOURCES), then each source's. Empty frames when the run kept no
    per-token log-probabilities."""
    logprobs = read_token_logprobs(run_dir)
    names = [m for m in models if m in logprobs] + [m for m in logprobs if m not in models]
    texts = {m: [(pid, -v.astype(float) / math.log(2)) for pid, v in logprobs[m]] for m in names}
    columns = stats.POSITION_COLUMNS if source_of is None else ["source", *stats.POSITION_COLUMNS]
    if not texts:
        return pd.DataFrame(columns=columns), pd.DataFrame(columns=columns)
    longest = max(len(t) for ts in texts.values() for _, t in ts)
    groups = {None: texts} if source_of is None else {ALL_SOURCES: texts, **{
        source: {m: [(pid, t) for pid, t in ts if source_of.get(pid) == source] for m, ts in texts.items()}
        for source in dict.fromkeys(source_of.values())}}
    tables = []
    for edges in (stats.position_edges(longest), stats.decade_edges(longest)):
        parts = [stats.loss_by_position([t for _, t in ts], edges, n_boot=n_boot, level=level, seed=seed)
                 .assign(model=m, source=source)
                 for source, group in groups.items() for m, ts in group.items() if ts]
        tables.append(pd.concat(parts, ignore_index=True).reindex(columns=columns))
    return tables[0], tables[1]


def context_limits(meta: dict) -> dict[str, int]:
    """Each transformer's context (tokens, BOS included) from meta.json: past it, a sliding window scores."""
    return {spec: int(info["max_context"]) for spec, info in (meta.get("models") or {}).items()
            if info.get("max_context") and info.get("family") != "rwkv"}


def markdown_positions(decades: pd.DataFrame, meta: dict, randoms: set[str], level: float) -> str:
    pct = f"{level:.0%}"
    spans = list(dict.fromkeys(zip(decades["position_from"], decades["position_to"])))
    table = []
    for source, model in dict.fromkeys(zip(decades.get("source", [None] * len(decades)), decades["model"])):
        t = decades[decades["model"] == model]
        if source is not None:
            t = t[t["source"] == source]
        t = t.set_index(["position_from", "position_to"])
        row = {"model": label(model, randoms)} if source is None else {"source": source,
                                                                        "model": label(model, randoms)}
        for lo, hi in spans:
            r = t.loc[(lo, hi)] if (lo, hi) in t.index else None
            row[f"tokens {lo}-{hi}"] = "" if r is None else \
                f"{fmt(r['mean_bits_per_token'], '.3f')} [{fmt(r['ci_low'], '.3f')}, {fmt(r['ci_high'], '.3f')}]"
        table.append(row)
    limits = context_limits(meta)
    lines = ["", "## Loss by token position", "",
             f"Mean bits per token over the texts reaching each span of token positions (1 = the first token, "
             f"conditioned on BOS alone), {pct} bootstrap interval over texts; fewer texts reach the later "
             "spans. Log-spaced bins: loss_by_position.csv and loss_by_position.png; per-token log-probabilities: "
             "token_logprobs.npz.", "", markdown_table(table, right=tuple(k for k in table[0]
                                                                  if k not in ("source", "model")))]
    if "source" in decades:
        lines += ["", f"Source {ALL_SOURCES}: every text; then each source's texts alone."]
    if limits:
        lines += ["", "Transformer contexts (a sliding window scores the tokens past them; RWKV carries its state): "
                  + ", ".join(f"`{m}` {n} tokens" for m, n in limits.items()) + "."]
    return "\n".join(lines)


def markdown(summary: pd.DataFrame, pairs: pd.DataFrame, meta: dict, randoms: set[str], level: float,
             decades: pd.DataFrame | None = None, by_source: pd.DataFrame | None = None,
             pairs_by_source: pd.DataFrame | None = None) -> str:
    pct = f"{level:.0%}"
    lines = [f"# Uncheatable eval: {where(meta)}", ""]
    if (busy := busy_warning(meta)) is not None:
        lines += [f"**{busy}**", ""]
    texts = f"{meta.get('papers', '?')} whole texts" if meta.get("chars") == 0 else \
        f"{meta.get('papers', '?')} texts, first {meta.get('chars', '?')} characters each"
    lines.append(f"{texts} "
                 f"(at least {meta.get('min_chars', '?')}). Lower bits per byte is better. Intervals: "
                 f"{pct} percentile bootstrap over papers ({(meta.get('bootstrap') or {}).get('resamples', '?')} "
                 "resamples).")
    if (after := meta.get("after")) is not None:
        lines.append(f"\nTexts published after {after['date']}: {after['reason']}." if after.get("date") else
                     f"\nNo training cutoff applied: {after.get('reason')}.")
    if meta.get("chunk_tokens"):
        lines.append(f"\nScored as the public uncheatable-eval leaderboard does: independent chunks of "
                     f"{meta['chunk_tokens']} tokens, each after BOS.")
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
    if by_source is not None:
        lines.append(markdown_by_source(by_source, pairs_by_source, randoms, level))
    if decades is not None and not decades.empty:
        lines.append(markdown_positions(decades, meta, randoms, level))
    lines += ["", "## Protocol", "", str(meta.get("protocol", ""))]
    for spec, info in (meta.get("models") or {}).items():
        cutoff = f"; training cutoff {info['training_cutoff']}" if "training_cutoff" in info else ""
        lines.append(f"- `{spec}`: {info.get('implementation', '?')}; {info.get('protocol', '?')}{cutoff}")
    lines += ["", f"Run: {meta.get('date_utc', '?')}, git {meta.get('git_revision', '?')}, "
              f"cpu {meta.get('cpu', '?')}. Per-paper rows: per_paper.csv; texts: papers.csv.", ""]
    return "\n".join(lines)


def markdown_by_source(by_source: pd.DataFrame, pairs: pd.DataFrame, randoms: set[str], level: float) -> str:
    """Models ranked within each source, and the paired differences within each source."""
    pct = f"{level:.0%}"
    lines = ["", "## By source", "", "Each source's texts alone; rank 1: the lowest mean bits per byte on that "
             "source. Compression % is the public uncheatable-eval leaderboard's figure (bits per byte / 8).", "",
             markdown_table([{
                 "source": r.source, "rank": r.rank, "model": label(r.model, randoms), "papers": r.papers,
                 "mean bits/byte": fmt(r.mean_bits_per_byte, ".4f"), f"{pct} CI": interval(r.ci_low, r.ci_high),
                 "compression %": fmt(r.compression_rate_pct, ".2f"), "tokens/s": fmt(r.tokens_per_s, ".1f")}
                 for r in by_source.itertuples()], right=("rank", "papers", "mean bits/byte", "compression %",
                                                           "tokens/s"))]
    if not pairs.empty:
        lines += ["", "Paired differences within each source (bits/byte, a - b; negative: a is better):", "",
                  markdown_table([{
                      "source": p.source, "a": label(p.model_a, randoms), "b": label(p.model_b, randoms),
                      "papers": p.papers, "mean a - b": fmt(p.mean_diff_bits_per_byte, ".4f"),
                      f"{pct} CI": interval(p.ci_low, p.ci_high), "a wins": fmt(p.a_win_share, ".0%"),
                      "b wins": fmt(p.b_win_share, ".0%")} for p in pairs.itertuples()],
                      right=("papers", "mean a - b", "a wins", "b wins"))]
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


def figure_by_source(by_source: pd.DataFrame, meta: dict, randoms: set[str], run_dir: Path,
                     level: float) -> list[Path]:
    """Mean bits per byte with intervals, one group of rows per source, one colour per model."""
    models = list(dict.fromkeys(by_source["model"]))
    sources = list(dict.fromkeys(by_source["source"]))
    n = len(by_source) + len(sources) - 1
    fig, ax = pyplot().subplots(figsize=(8, 2.2 + 0.4 * n))
    y, ticks, names = n, [], []
    for source in sources:
        for r in by_source[by_source["source"] == source].itertuples():
            ax.errorbar(r.mean_bits_per_byte, y, xerr=[[r.mean_bits_per_byte - r.ci_low],
                                                          [r.ci_high - r.mean_bits_per_byte]],
                        fmt="s" if r.model in randoms else "o", color=f"C{models.index(r.model)}", capsize=4,
                        label=label(r.model, randoms) if source == sources[0] else None)
            ticks.append(y)
            names.append(f"{source}: {r.rank}")
            y -= 1
        y -= 1
    ax.set_yticks(ticks, names)
    finish_axes(ax, xlabel=f"mean bits per UTF-8 byte (lower is better)\nbars: {level:.0%} bootstrap interval over "
                "texts; labels: source: rank", ylabel="source", title=f"Uncheatable eval by source\n{where(meta)}",
                grid="x", legend=True, fontsize=9)
    return save_figure(fig, run_dir / "bits_per_byte_by_source")


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
    sources = rows.drop_duplicates("paper_id").set_index("paper_id")["source"].reindex(table.index)
    if len(set(sources) - {""}) > 1:
        for i, source in enumerate(dict.fromkeys(sources)):
            part = table[sources == source]
            ax.scatter(part[a], part[b], s=14, alpha=0.7, color=f"C{i + 1}", label=source)
    else:
        ax.scatter(table[a], table[b], s=14, alpha=0.7)
    lo = float(min(table[a].min(), table[b].min())) if len(table) else 0.0
    hi = float(max(table[a].max(), table[b].max())) if len(table) else 1.0
    ax.plot([lo, hi], [lo, hi], color="tab:gray", lw=1, ls="--", label="equal")
    finish_axes(ax, xlabel=f"{label(a, randoms)}: bits per UTF-8 byte", ylabel=f"{label(b, randoms)}: bits per "
                "UTF-8 byte", title=scatter_title(pair, meta), grid=None, legend="lower right", fontsize=9)
    return save_figure(fig, run_dir / "paired_scatter")


def figure_loss_by_position(table: pd.DataFrame, meta: dict, randoms: set[str], run_dir: Path,
                            level: float) -> list[Path]:
    """Mean bits per token against token position (log x), one line per model with its interval band, a
    dotted vertical line at each transformer's context; below, the texts reaching each bin. With a `source`
    column, one column of panels per source (every text first)."""
    groups = [(None, table)] if "source" not in table else \
        [(source, table[table["source"] == source]) for source in dict.fromkeys(table["source"])]
    fig, axes = pyplot().subplots(2, len(groups), figsize=(8 if len(groups) == 1 else 4.5 * len(groups), 6),
                                  sharex=True, sharey="row", squeeze=False, gridspec_kw={"height_ratios": [4, 1]})
    models = list(dict.fromkeys(table["model"]))
    last = int(table["position_to"].max())
    n = int(table["texts"].max())
    limits = context_limits(meta)
    beyond = [f"{m}: context {limits[m]} tokens, past the longest text" for m in models
              if m in limits and limits[m] > 2 * last]
    note = ("\n" + "; ".join(beyond)) if beyond else ""
    title = f"Loss by token position, {n} texts (shaded: {level:.0%} bootstrap interval over texts)\n" \
            f"{where(meta)}{note}"
    for k, (source, part) in enumerate(groups):
        ax, below = axes[0, k], axes[1, k]
        draw_positions(ax, below, part, models, limits, last, randoms)
        finish_axes(ax, xlabel="", ylabel="mean bits per token (lower is better)" if k == 0 else "",
                    title=title if source is None else f"{source}: {int(part['texts'].max())} texts",
                    legend=k == 0, fontsize=9)
        finish_axes(below, xlabel="token position in the text (1 = first token after BOS; log-spaced bins)"
                    if len(groups) == 1 else "token position (log bins)", ylabel="texts" if k == 0 else "",
                    grid="both", legend=False)
        below.set_ylim(0, n * 1.1)
    if len(groups) > 1:
        fig.suptitle(title, fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.95))  # room for the suptitle above the panels' titles
    return save_figure(fig, run_dir / "loss_by_position")


def draw_positions(ax, below, table: pd.DataFrame, models: list[str], limits: dict[str, int], last: int,
                   randoms: set[str]) -> None:
    """One panel of the loss-by-position figure: a line and band per model, each context within reach."""
    for i, model in enumerate(models):
        t = table[table["model"] == model]
        color, rand = f"C{i}", model in randoms
        ax.plot(t["position_mid"], t["mean_bits_per_token"], color=color, marker="s" if rand else "o", ms=3,
                ls="--" if rand else "-", label=label(model, randoms))
        ax.fill_between(t["position_mid"], t["ci_low"], t["ci_high"], color=color, alpha=0.2, lw=0)
        below.step(t["position_mid"], t["texts"], where="mid", color=color, lw=1)
        if model in limits and limits[model] <= 2 * last:
            for a in (ax, below):
                a.axvline(limits[model], color=color, ls=":", lw=1.5,
                          label=f"{model}: context {limits[model]} tokens" if a is ax else None)
    ax.set_xscale("log")
