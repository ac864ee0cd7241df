"""Tables and figures of an `rwkv-bench nlp` run, rebuilt from its stored files only.

    table.md          paper-style: one row per task and metric (the paper's metric where it has one),
                      one column per model, value ± lm-eval's standard error, random-weight models marked;
                      then the work table: tokens processed vs re-encoding every request, and time
    nlp_scores.png/svg   scores per task and model with standard-error bars
    nlp_tokens.png/svg   tokens processed vs re-encode-everything per task and model
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..recording import busy_warning
from ..report.figures import finish_axes, pyplot, save_figure
from ..report.tables import fmt, is_missing, markdown_table
from . import store
from .tasks import LOWER_IS_BETTER, PAPER_TASKS, report_metrics

RANDOM_MARK = "†"


def _task_order(names: list[str], meta: dict) -> list[str]:
    requested = meta.get("tasks") or []
    order = {n: i for i, n in enumerate(PAPER_TASKS + [t for t in requested if t not in PAPER_TASKS])}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def _fmt(value, metric: str) -> str:
    """Three decimals; four significant digits for large perplexity-type values (2.684e+05)."""
    large = metric in LOWER_IS_BETTER and not is_missing(value) and abs(value) >= 100
    return fmt(value, ".4g" if large else ".3f")


def _bool(value) -> bool:
    return str(value).strip().lower() in ("true", "1")


def model_columns(meta: dict, table: pd.DataFrame) -> list[tuple[str, bool]]:
    """(label, random_weights) in the order the models were given."""
    models = [(m["label"], bool(m.get("random_weights"))) for m in meta.get("models", [])]
    known = {m for m, _ in models}
    for label in table.get("model", pd.Series(dtype=str)).unique():
        if label not in known:
            rw = table[table.model == label]["random_weights"].map(_bool).any()
            models.append((label, bool(rw)))
    return models


def score_rows(table: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The paper-style selection: for each task the paper's metrics (all of them for other tasks)."""
    if table.empty:
        return table
    table = table.copy()
    table["filter"] = table["filter"].fillna("none")
    keep = []
    for task in _task_order(list(table.task.unique()), meta):
        rows = table[table.task == task]
        filters = list(rows["filter"].unique())
        for metric in report_metrics(task, list(dict.fromkeys(rows.metric))):
            for filt in (["none"] if "none" in filters else filters):
                sel = rows[(rows.metric == metric) & (rows["filter"] == filt)]
                if not sel.empty:
                    keep.append(sel)
    return pd.concat(keep) if keep else table.iloc[:0]


def markdown(meta: dict, table: pd.DataFrame, tokens: pd.DataFrame) -> str:
    models = model_columns(meta, table)
    versions = meta.get("versions") or {}
    options = store.run_options(meta)
    shots = options.get("num_fewshot", 0)
    limit = options.get("limit")
    lines = ["# NLP benchmarks through lm-evaluation-harness", "",
             f"{meta.get('device', '?')} · {meta.get('dtype', '?')} · "
             f"{'zero-shot' if not shots else f'{shots}-shot'} · "
             f"{f'limit {limit} examples per task' if limit else 'full test sets'} · "
             f"lm-eval {versions.get('lm_eval', '?')} · {meta.get('date_utc', '')}", ""]
    if (busy := busy_warning(meta)) is not None:
        lines += [f"**{busy}**", ""]
    selected = score_rows(table, meta)
    if selected.empty:
        lines += ["(no results yet)", ""]
    else:
        lines += [markdown_table([score_cells(task, metric, filt, group, models) for (task, metric, filt), group
                                  in selected.groupby(["task", "metric", "filter"], sort=False)]), ""]
        if any(rw for _, rw in models):
            lines += [f"{RANDOM_MARK} random weights: these numbers exercise the harness and say nothing about "
                      "the architecture's quality.", ""]
        lines += ["Values and standard errors (±) are lm-eval's own. Metric per task as in the RWKV paper: acc_norm "
                  "for ARC-Challenge, HeadQA, HellaSwag and OpenBookQA, exact match for ReCoRD, perplexity and "
                  "accuracy for LAMBADA, accuracy elsewhere (all metrics are in table.csv).", ""]
    if not tokens.empty:
        lines += ["## Work done", "",
                  "tokens processed: positions the model ran (padding included). re-encode: positions if every "
                  "request ran alone from scratch (what a harness without state or prefix reuse runs).", "",
                  markdown_table([work_cells(r) for _, r in tokens.iterrows()]), ""]
    lines += ["Files beside this one: table.csv (every metric), tokens.csv, results_<model>.json (lm-eval's own), "
              "meta.json.", ""]
    return "\n".join(lines)


def score_cells(task: str, metric: str, filt: str, group: pd.DataFrame, models: list[tuple[str, bool]]) -> dict:
    """One row of the paper-style table: value ± standard error per model."""
    name = metric if filt == "none" else f"{metric} ({filt})"
    cells = {"task": task, "metric": f"{name} {'↓' if metric in LOWER_IS_BETTER else '↑'}"}
    for label, rw in models:
        row = group[group.model == label]
        text = "–"
        if not row.empty:
            value, stderr = row.iloc[0]["value"], row.iloc[0]["stderr"]
            text = _fmt(value, metric) + ("" if is_missing(stderr) else f" ± {_fmt(stderr, metric)}")
        cells[f"{label} {RANDOM_MARK}" if rw else label] = text
    return cells


def work_cells(r) -> dict:
    """One row of the work table (tokens.csv)."""
    ratio = r["tokens_reencode"] / r["tokens_processed"] if r["tokens_processed"] else float("nan")
    return {"model": r["model"], "runner": r["runner"], "task": r["task"], "request type": r["request_type"],
            "requests": int(r["requests"]), "tokens processed": int(r["tokens_processed"]),
            "re-encode": int(r["tokens_reencode"]), "re-encode / processed": fmt(ratio, ".2f") + "x",
            "model time (s)": fmt(r["model_time_s"], ".2f"), "wall (s)": fmt(r["wall_s"], ".2f")}


def scores_figure(run_dir: Path, meta: dict, table: pd.DataFrame) -> list[Path]:
    selected = score_rows(table, meta)
    if selected.empty:
        return []
    models = model_columns(meta, table)
    lower = selected.metric.isin(LOWER_IS_BETTER)
    panels = [("accuracy-type metrics", selected[~lower], "score (higher is better)", False),
              ("perplexity-type metrics", selected[lower], "value (lower is better, log scale)", True)]
    panels = [p for p in panels if not p[1].empty]
    widths = [max(3, 0.9 * p[1].groupby(["task", "metric"]).ngroups + 1.5) for p in panels]
    fig, axes = pyplot().subplots(1, len(panels), figsize=(sum(widths) + 1, 4.8), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (title, rows, ylabel, log) in zip(axes[0], panels):
        keys = list(dict.fromkeys(zip(rows.task, rows.metric)))
        for m, (label, rw) in enumerate(models):
            xs, ys, es = [], [], []
            for k, (task, metric) in enumerate(keys):
                row = rows[(rows.task == task) & (rows.metric == metric) & (rows.model == label)]
                if row.empty:
                    continue
                offset = (m - (len(models) - 1) / 2) * 0.8 / max(len(models), 1)
                xs.append(k + offset)
                ys.append(float(row.iloc[0]["value"]))
                err = row.iloc[0]["stderr"]
                es.append(0.0 if err is None or pd.isna(err) else float(err))
            name = f"{label} (random weights)" if rw else label
            ax.errorbar(xs, ys, yerr=es, fmt="o", capsize=3, label=name)
        ax.set_xticks(range(len(keys)), [f"{t}\n{m}" for t, m in keys], rotation=45, ha="right", fontsize=8)
        if log:
            ax.set_yscale("log")
        finish_axes(ax, xlabel="task / metric", ylabel=ylabel, title=title, grid="y", legend=ax is axes[0][0])
    shots = store.run_options(meta).get("num_fewshot", 0)
    fig.suptitle(f"lm-eval {'zero-shot' if not shots else f'{shots}-shot'} scores (± standard error) — "
                 f"{meta.get('device', '?')}, {meta.get('dtype', '?')}")
    fig.tight_layout()
    return save_figure(fig, run_dir / "nlp_scores")


def tokens_figure(run_dir: Path, meta: dict, tokens: pd.DataFrame) -> list[Path]:
    if tokens.empty:
        return []
    per = tokens.groupby(["task", "model"], sort=False)[["tokens_processed", "tokens_reencode"]].sum().reset_index()
    task_names = _task_order(list(per.task.unique()), meta)
    labels = list(dict.fromkeys(per.model))
    random = {m["label"]: m.get("random_weights") for m in meta.get("models", [])}
    fig, ax = pyplot().subplots(figsize=(max(5, 1.6 * len(task_names) * max(1, len(labels)) ** 0.5 + 2), 4.5))
    width = 0.8 / max(len(labels), 1)
    for m, label in enumerate(labels):
        rows = per[per.model == label].set_index("task")
        xs = [k + (m - (len(labels) - 1) / 2) * width for k, t in enumerate(task_names) if t in rows.index]
        done = [rows.loc[t, "tokens_processed"] for t in task_names if t in rows.index]
        again = [rows.loc[t, "tokens_reencode"] for t in task_names if t in rows.index]
        name = f"{label} (random weights)" if random.get(label) else label
        bars = ax.bar(xs, done, width * 0.9, label=f"{name}: processed")
        ax.scatter(xs, again, marker="_", s=300, color=bars.patches[0].get_facecolor() if bars.patches else None,
                   label=f"{name}: re-encode everything", zorder=3)
    ax.set_xticks(range(len(task_names)), task_names, rotation=30, ha="right", fontsize=8)
    finish_axes(ax, xlabel="task", ylabel="tokens (model positions run)", title="Work per task: tokens processed "
                f"vs re-encoding every request — {meta.get('device', '?')}, {meta.get('dtype', '?')}", grid="y")
    fig.tight_layout()
    return save_figure(fig, run_dir / "nlp_tokens")


def render(run_dir: Path) -> list[Path]:
    run_dir = Path(run_dir)
    meta = store.read_meta(run_dir)
    table = store.read_table(run_dir)
    tokens = store.read_tokens(run_dir)
    md = run_dir / "table.md"
    md.write_text(markdown(meta, table, tokens), encoding="utf-8")
    return [md] + scores_figure(run_dir, meta, table) + tokens_figure(run_dir, meta, tokens)
