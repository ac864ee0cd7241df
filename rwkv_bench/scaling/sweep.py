"""The sweep: every (scenario, length, model) point in its own child process, one CSV row each.

Order: scenario, then length (ascending), then model, so a run stopped early still compares the models
at the lengths it reached. Once a (model, scenario) fails (oom, timeout, error) at one length, its
longer lengths are recorded as `skipped`, and the sweep goes on with the others.
Rows are appended (flushed and fsynced) as soon as a point finishes; for a generate point its per-token
rows go first and its points.csv row last, so the points.csv row commits the point. `--resume` skips the
points already in points.csv and drops per-token rows of points that never committed.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..errors import UserError
from ..options import as_dict, canonical_dtype, merge_options, parse_device, parse_size, positive
from ..recording import (append_row, finish_meta, open_run, read_meta, read_rows, resume_meta, rewrite_rows,
                         start_meta)
from ..specs import ModelSpec, parse_models
from .config import ScalingConfig
from .launcher import launch
from .points import (COLUMNS, FAILED, TOKEN_COLUMNS, PointSpec, geometric_grid, kv_label, parse_scenarios,
                     point_key)

KIND = "scaling"
POINTS_CSV = "points.csv"
TOKENS_CSV = "generate_tokens.csv"
LOG_DIR = "logs"         # child logs of points that did not succeed


# ---- options ----

def validate(c: ScalingConfig) -> dict:
    """Check every option cheaply, before any child is spawned; returns the parsed plan."""
    models = parse_models(c.models)
    scenarios = parse_scenarios(str(c.scenario))
    for name in ("min_len", "max_len", "repeats", "prompt_len", "time_budget", "chunk_size"):
        positive(getattr(c, name), f"--{name.replace('_', '-')}")
    positive(c.warmup, "--warmup", zero_ok=True)
    positive(c.threads, "--threads")
    grid = geometric_grid(c.min_len, c.max_len, c.points, c.ratio)
    gen_max = c.gen_max_len if c.gen_max_len is not None else c.max_len
    positive(gen_max, "--gen-max-len")
    gen_grid = [t for t in grid if t <= gen_max]
    if "generate" in scenarios and not gen_grid:
        raise UserError(f"--gen-max-len {gen_max} is below --min-len {c.min_len}: no generate lengths")
    parse_device(c.device)
    canonical_dtype(c.dtype)
    return {"models": models, "scenarios": scenarios, "lengths": {"prefill": grid, "generate": gen_grid},
            "memory_limit_bytes": parse_size(c.memory_limit)}


def prepare_peers(models: list[ModelSpec], seed: int) -> None:
    """transformers:rwkv4-<size> is saved once in the parent, so every child loads the same directory."""
    from ..models.peer import peer_cache_dir, save_peer

    for spec in models:
        if spec.kind == "preset" and spec.runner == "transformers" and spec.family == "rwkv":
            save_peer(spec.location, peer_cache_dir(spec.location, seed), seed=seed)


# ---- the loop ----

def committed_keys(rows) -> set:
    if rows.empty:
        return set()
    return {point_key(r.model, r.scenario, r.seq_len) for r in rows.itertuples()}


def first_failures(rows) -> dict:
    """(model, scenario) -> (seq_len, status) of its shortest failed point."""
    out = {}
    if rows.empty:
        return out
    for r in rows.itertuples():
        if r.status in FAILED:
            key = (str(r.model), str(r.scenario))
            if key not in out or int(r.seq_len) < out[key][0]:
                out[key] = (int(r.seq_len), str(r.status))
    return out


def drop_uncommitted_token_rows(run_dir: Path, committed: set) -> int:
    """Per-token rows of a generate point whose points.csv row never got written (killed in between)."""
    path = run_dir / TOKENS_CSV
    tokens = read_rows(path)
    if tokens.empty:
        return 0
    keep = [point_key(m, "generate", t) in committed for m, t in zip(tokens["model"], tokens["seq_len"])]
    dropped = len(keep) - sum(keep)
    if dropped:
        rewrite_rows(path, tokens[keep], TOKEN_COLUMNS)
    return dropped


def plan_points(models: list[str], plan: dict) -> list[tuple[str, int, str]]:
    return [(scenario, T, model) for scenario in plan["scenarios"] for T in plan["lengths"][scenario]
            for model in models]


def plan_text(plan: dict, models: list[str], todo: list) -> str:
    """What the sweep is about to do, and roughly how long it takes, before it starts."""
    lines = [f"plan: {len(models)} model(s): {', '.join(models)}"]
    for scenario in plan["scenarios"]:
        grid = plan["lengths"][scenario]
        how = " (every token decoded and timed one by one)" if scenario == "generate" else ""
        lines.append(f"  {scenario}: {len(grid)} lengths, T = {grid[0]:,} ... {grid[-1]:,}{how}")
    estimate = sum(estimated_cost_s(s, T) for s, T, _ in todo)
    lines.append(f"  {len(todo)} points to run; rough estimate {estimate / 60:.0f} min on a small CPU model "
                 "(a point past --time-budget is cut off, and longer lengths of its model are skipped)")
    return "\n".join(lines)


def estimated_cost_s(scenario: str, T: int) -> float:
    """Rough seconds per point on a small CPU model, only to weight the progress bar's ETA."""
    return 4.0 + (T * 2e-4 if scenario == "prefill" else T * 1e-2)


def run_sweep(given: dict, *, out: str | None = None, resume: bool = False, report: bool = True,
              console=None) -> Path:
    """The plain function behind `rwkv-bench scaling`. Returns the run directory."""
    run_dir, old_meta = open_run(KIND, out=out, resume=resume, results=(POINTS_CSV,))
    config = merge_options(ScalingConfig, given, (old_meta or {}).get("options"))
    if given.get("points") is not None:
        config.ratio = None  # the grid is set by one of the two
    elif given.get("ratio") is not None:
        config.points = None
    plan = validate(config)
    opts = as_dict(config)
    models = [spec.text for spec in plan["models"]]
    families = {spec.text: spec.family for spec in plan["models"]}
    fields = dict(lengths=plan["lengths"], models=models, **protocol(config))
    if old_meta is not None:
        resume_meta(run_dir, old_meta, opts, **fields)
    else:
        start_meta(run_dir, KIND, opts, completed=False, **fields)
    t0 = time.perf_counter()
    points_csv, tokens_csv = run_dir / POINTS_CSV, run_dir / TOKENS_CSV
    rows = read_rows(points_csv)
    done = committed_keys(rows)
    drop_uncommitted_token_rows(run_dir, done)
    failures = first_failures(rows)
    if not rows.empty:
        families.update({str(r.model): str(r.family) for r in rows.itertuples() if isinstance(r.family, str) and r.family})
    todo = [p for p in plan_points(models, plan) if point_key(p[2], p[0], p[1]) not in done]
    console = console or make_console()
    console.print(plan_text(plan, models, todo), soft_wrap=True)
    if todo:
        prepare_peers(plan["models"], config.seed)
    try:
        with make_progress(console) as progress:
            total = sum(estimated_cost_s(s, T) for s, T, _ in todo)
            task = progress.add_task("starting", total=max(total, 1e-9), points=f"0/{len(todo)}")
            for i, (scenario, T, model) in enumerate(todo):
                progress.update(task, description=f"{model} {scenario} T={T}", points=f"{i}/{len(todo)}")
                failed = failures.get((model, scenario))
                if failed and failed[0] < T:
                    row = skipped_row(model, scenario, T, failed, families.get(model, ""), config)
                else:
                    result = launch(point_spec(model, scenario, T, config, plan), run_dir / LOG_DIR)
                    row = {**result, "model": model, "scenario": scenario, "seq_len": T}
                    row.setdefault("family", families.get(model, ""))
                    row.setdefault("kv_cache", kv_label(row["family"], config.kv_cache))
                    row.setdefault("device", config.device)
                    row.setdefault("dtype", config.dtype)
                    if row.get("family"):
                        families[model] = row["family"]
                    if row["status"] in FAILED and (model, scenario) not in failures:
                        failures[(model, scenario)] = (T, row["status"])
                    for tok in row.pop("token_rows", None) or []:
                        append_row(tokens_csv, {"model": model, "seq_len": T, "kv_cache": row["kv_cache"], **tok},
                                   TOKEN_COLUMNS)
                row["error"] = " ".join(str(row.get("error") or "").split())  # one line in the CSV
                append_row(points_csv, row, COLUMNS)
                progress.console.print(point_line(row), soft_wrap=True)
                progress.update(task, advance=estimated_cost_s(scenario, T), points=f"{i + 1}/{len(todo)}")
            progress.update(task, description="done")
    finally:
        log_dir = run_dir / LOG_DIR
        if log_dir.is_dir() and not any(log_dir.iterdir()):
            log_dir.rmdir()
    finish_meta(run_dir, sweep_wall_s=read_meta(run_dir).get("sweep_wall_s", 0) + (time.perf_counter() - t0),
                model_info=model_info(read_rows(points_csv)))
    if report:
        from .report import render

        render(run_dir)
    return run_dir


def point_spec(model: str, scenario: str, T: int, c: ScalingConfig, plan: dict) -> PointSpec:
    return PointSpec(model=model, tokenizer=c.tokenizer, scenario=scenario, seq_len=T, device=c.device,
                     dtype=canonical_dtype(c.dtype), kv_cache=bool(c.kv_cache), repeats=c.repeats, warmup=c.warmup,
                     prompt_len=c.prompt_len, time_budget_s=float(c.time_budget),
                     memory_limit_bytes=plan["memory_limit_bytes"], seed=c.seed, chunk_size=c.chunk_size,
                     threads=c.threads)


def skipped_row(model, scenario, T, failed, family, c: ScalingConfig) -> dict:
    first_T, status = failed
    return {"model": model, "family": family, "scenario": scenario, "seq_len": T, "status": "skipped",
            "kv_cache": kv_label(family, c.kv_cache), "device": c.device, "dtype": c.dtype,
            "error": f"not run: {status} at seq_len {first_T}"}


def point_line(row: dict) -> str:
    status = row["status"]
    head = f"{row['model']:<28} {row['scenario']:<8} T={row['seq_len']:<7}"
    if status != "ok":
        color = "yellow" if status == "skipped" else "red"
        return f"{head} [{color}]{status}[/{color}] {row.get('error', '')}"[:400]
    mem = (row.get("peak_mem_bytes") or 0) / 2 ** 20
    if row["scenario"] == "prefill":
        return f"{head} ok  {row['latency_s']:.4g} s  {row['tokens_per_s']:.4g} tok/s  +{mem:.1f} MiB"
    return (f"{head} ok  {row['cumulative_s']:.4g} s total  {1000 * row['latency_s']:.3g} ms/token at the end  "
            f"+{mem:.1f} MiB")


def model_info(rows) -> dict:
    info = {}
    if rows.empty:
        return info
    for r in rows[rows["status"] == "ok"].itertuples():
        info.setdefault(str(r.model), {"family": r.family, "implementation": r.implementation,
                                       "random_weights": bool(r.random_weights),
                                       "weights_bytes": int(r.weights_bytes)})
    return info


def protocol(c: ScalingConfig) -> dict:
    opts = dataclasses.asdict(c)
    kv = ("with their KV cache (transformers' default)" if opts["kv_cache"] else
          "WITHOUT a KV cache: the whole growing sequence is re-run for every token (the paper's protocol)")
    return {"protocol": {
        "inputs": f"random token ids (seed {opts['seed']}); no text is encoded",
        "prefill": (f"one forward pass over T tokens, last position's logits only; median of up to "
                    f"{opts['repeats']} timed passes after {opts['warmup']} untimed warm-up pass(es) over the "
                    f"first min(T, 1024) tokens. RWKV: chunked parallel mode (chunk {opts['chunk_size']}); "
                    "transformers: one pass with SDPA attention"),
        "generate": (f"greedy decoding of T tokens after a {opts['prompt_len']}-token prompt, each step timed; "
                     f"RWKV in recurrent mode; transformers {kv}. latency_s = mean per-token time over the last "
                     "10% of positions; cumulative_s = sum of the T step times (prompt excluded, see prompt_s)"),
        "memory": ("CPU: peak RSS of the child, sampled every 3 ms by the launcher from outside the timed "
                   "process (plus the child's getrusage ru_maxrss when it rose), above its RSS after loading, "
                   "warm-up and malloc_trim; --memory-limit is enforced on that same number. CUDA: "
                   "torch.cuda.max_memory_allocated above memory_allocated before the measured runs. "
                   "weights_bytes is reported separately"),
        "isolation": "every point in a fresh subprocess; the time budget counts from the end of loading",
        "tokenizer": "none is used: token ids are random"
    }}


def make_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def make_progress(console):
    from rich.progress import (BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(SpinnerColumn(), TextColumn("{task.description:<44}"), BarColumn(),
                    TextColumn("{task.fields[points]} points"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, transient=False)
