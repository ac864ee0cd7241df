"""The sweep: every (scenario, length, model) point in a fresh child process, one CSV row each.

Order: lengths ascending, then model, so a run stopped early still compares the models at the lengths it
reached; one child per (length, model) measures its prefill, decode and generate in turn (the decode steps
start from the state the prefill built; the direct generation runs in the same process as the decode samples
it checks). Once a (model, scenario) fails (oom, timeout, error) at one length, its longer lengths are
recorded as `skipped` (decode also after its prefill failed: it needs the prefill), and the sweep goes on with
the others. Before a transformer point runs, its KV cache and activations are predicted (predict.py); a point
that cannot fit the free memory or --memory-limit is recorded as `skipped` with the predicted size.
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
from .estimate import LOAD_S, estimated_cost_s, model_size
from .launcher import launch
from .points import (COLUMNS, FAILED, PAIRED, TOKEN_COLUMNS, PointSpec, geometric_grid, kv_label,
                     parse_scenarios, point_key)
from .predict import available_bytes, predict, transformer_dims

MEMORY_HEADROOM = 0.9    # a point may plan on this share of the memory free when it starts

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
    positive(c.decode_steps, "--decode-steps")
    positive(c.decode_ref_len, "--decode-ref-len", zero_ok=True)
    positive(c.repeat_time, "--repeat-time", zero_ok=True)
    grid = geometric_grid(c.min_len, c.max_len, c.points, c.ratio)
    gen_max = c.gen_max_len if c.gen_max_len is not None else c.max_len
    positive(gen_max, "--gen-max-len")
    gen_grid = [t for t in grid if t <= gen_max]
    if "generate" in scenarios and not gen_grid:
        raise UserError(f"--gen-max-len {gen_max} is below --min-len {c.min_len}: no generate lengths")
    parse_device(c.device)
    canonical_dtype(c.dtype)
    return {"models": models, "scenarios": scenarios,
            "lengths": {"prefill": grid, "decode": grid, "generate": gen_grid},
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
    """(scenario, T, model) in the order they run: the scenarios of a (T, model) next to each other."""
    paired = [s for s in plan["scenarios"] if s in PAIRED]
    grid = sorted({T for s in paired for T in plan["lengths"][s]})
    points = [(s, T, model) for T in grid for model in models for s in paired if T in plan["lengths"][s]]
    return points + [(s, T, model) for s in plan["scenarios"] if s not in PAIRED for T in plan["lengths"][s]
                     for model in models]


def children(todo: list[tuple[str, int, str]]) -> list[tuple[list[str], int, str]]:
    """The points to run grouped by child: (phases, T, model), the scenarios of one (T, model) together."""
    out = []
    for scenario, T, model in todo:
        if scenario in PAIRED and out and out[-1][1:] == (T, model) and out[-1][0][-1] in PAIRED:
            out[-1][0].append(scenario)
        else:
            out.append(([scenario], T, model))
    return out


def plan_text(plan: dict, models: list[str], todo: list, costs: dict, sizes: dict) -> str:
    """What the sweep is about to do, and roughly how long it takes, before it starts."""
    lines = [f"plan: {len(models)} model(s): {', '.join(models)}"]
    for scenario in plan["scenarios"]:
        grid = plan["lengths"][scenario]
        how = {"generate": " (every token decoded and timed one by one: the direct Figure 7)",
               "decode": " (prefill to T in the prefill's child, then timed steps at context T; Figure 7 is "
                         "integrated from these)"}.get(scenario, "")
        lines.append(f"  {scenario}: {len(grid)} lengths, T = {grid[0]:,} ... {grid[-1]:,}{how}")
    estimate = sum(costs.values())
    unknown = [m for m in models if not sizes[m].known]
    lines.append(f"  {len(todo)} points in {len(children(todo))} child processes; rough estimate "
                 f"{estimate / 60:.0f} min with 1 thread of a 2-core Xeon"
                 + (f" ({', '.join(unknown)}: size unknown, counted as tiny)" if unknown else "")
                 + " (a point past --time-budget is cut off, and longer lengths of its model are skipped; a "
                 "transformer point predicted not to fit in memory is skipped)")
    return "\n".join(lines)


def point_cost_s(scenario: str, T: int, model: str, c: ScalingConfig, plan: dict, sizes: dict, dims: dict) -> float:
    """The estimate of one point: nothing for a point predicted not to fit, at most its time budget."""
    predicted = predict(dims.get(model), T, [scenario], bool(c.kv_cache), canonical_dtype(c.dtype), c.prompt_len)
    if memory_refusal(predicted.get("predicted_mem_bytes"), plan["memory_limit_bytes"]):
        return 0.0
    return min(estimated_cost_s(scenario, T, sizes[model]), float(c.time_budget) + LOAD_S)


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
    points_csv, tokens_csv = run_dir / POINTS_CSV, run_dir / TOKENS_CSV
    rows = read_rows(points_csv)  # before meta.json is touched: a corrupt points.csv leaves the run as it was
    if old_meta is not None:
        resume_meta(run_dir, old_meta, opts, **fields)
    else:
        start_meta(run_dir, KIND, opts, completed=False, **fields)
    t0 = time.perf_counter()
    done = committed_keys(rows)
    drop_uncommitted_token_rows(run_dir, done)
    failures = first_failures(rows)
    if not rows.empty:
        families.update({str(r.model): str(r.family) for r in rows.itertuples() if isinstance(r.family, str) and r.family})
    todo = [p for p in plan_points(models, plan) if point_key(p[2], p[0], p[1]) not in done]
    console = console or make_console()
    dims = {spec.text: transformer_dims(spec) for spec in plan["models"]}
    sizes = {spec.text: model_size(spec, dims[spec.text]) for spec in plan["models"]}
    costs = {p: point_cost_s(*p, config, plan, sizes, dims) for p in todo}
    console.print(plan_text(plan, models, todo, costs, sizes), soft_wrap=True)
    if todo:
        prepare_peers(plan["models"], config.seed)
    try:
        with make_progress(console) as progress:
            total = sum(costs.values())
            task = progress.add_task("starting", total=max(total, 1e-9), points=f"0/{len(todo)}")
            done_points = 0
            for phases, T, model in children(todo):
                progress.update(task, description=f"{model} {'+'.join(phases)} T={T}",
                                points=f"{done_points}/{len(todo)}")
                rows = run_child(phases, T, model, config, plan, run_dir, failures, families, dims.get(model))
                for row in rows:
                    for tok in row.pop("token_rows", None) or []:
                        append_row(tokens_csv, {"model": model, "seq_len": T, "kv_cache": row["kv_cache"], **tok},
                                   TOKEN_COLUMNS)
                    row["error"] = " ".join(str(row.get("error") or "").split())  # one line in the CSV
                    append_row(points_csv, row, COLUMNS)
                    progress.console.print(point_line(row), soft_wrap=True)
                    progress.update(task, advance=costs.get((row["scenario"], T, model), 0.0))
                done_points += len(phases)
                progress.update(task, points=f"{done_points}/{len(todo)}")
            progress.update(task, description="done")
    finally:
        log_dir = run_dir / LOG_DIR
        if log_dir.is_dir() and not any(log_dir.iterdir()):
            log_dir.rmdir()
    finish_meta(run_dir, sweep_wall_s=read_meta(run_dir).get("sweep_wall_s", 0) + (time.perf_counter() - t0),
                model_info=model_info(read_rows(points_csv)))
    if report:
        from ..report.build import render_run  # the kind's tables and figures, then index.md

        render_run(run_dir)
    return run_dir


def run_child(phases: list[str], T: int, model: str, c: ScalingConfig, plan: dict, run_dir: Path,
              failures: dict, families: dict, dims) -> list[dict]:
    """The rows of one child's phases: skipped without running (an earlier failure, a predicted size that does
    not fit), or measured."""
    predicted = predict(dims, T, phases, bool(c.kv_cache), canonical_dtype(c.dtype), c.prompt_len)
    rows, run = {}, []
    for phase in phases:
        failed = failures.get((model, phase))
        if phase == "decode" and (model, "prefill") in failures:  # decode at T needs the prefill to T
            earlier = failures[(model, "prefill")]
            failed = min(failed, earlier) if failed else earlier
        if failed and failed[0] < T:
            rows[phase] = {**skipped_row(model, phase, T, failed, families.get(model, ""), c), **predicted}
        else:
            run.append(phase)
    too_big = memory_refusal(predicted.get("predicted_mem_bytes"), plan["memory_limit_bytes"]) if run else None
    if too_big:
        for phase in run:
            rows[phase] = {**skipped_row(model, phase, T, None, families.get(model, ""), c), **predicted,
                           "error": too_big}
        run = []
    if run:
        results = launch(point_spec(model, run, T, c, plan), run_dir / LOG_DIR)
        for phase in run:
            row = {**results[phase], **predicted, "model": model, "scenario": phase, "seq_len": T}
            row.setdefault("family", families.get(model, ""))
            row.setdefault("kv_cache", kv_label(row["family"], c.kv_cache))
            row.setdefault("device", c.device)
            row.setdefault("dtype", c.dtype)
            if row.get("family"):
                families[model] = row["family"]
            if row["status"] in FAILED and (model, phase) not in failures:
                failures[(model, phase)] = (T, row["status"])
            rows[phase] = row
    return [rows[phase] for phase in phases]


def memory_refusal(predicted: int | None, limit: int | None) -> str | None:
    """Why a point predicted to need `predicted` bytes is not attempted, or None when it may run."""
    if not predicted:
        return None
    gib = 2 ** 30
    free = available_bytes()
    if limit and predicted > limit:
        return (f"not run: predicted memory {predicted / gib:.2f} GiB (KV cache and activations) exceeds "
                f"--memory-limit {limit / gib:.2f} GiB")
    if predicted > MEMORY_HEADROOM * free:
        return (f"not run: predicted memory {predicted / gib:.2f} GiB (KV cache and activations) exceeds "
                f"{MEMORY_HEADROOM:.0%} of the free memory ({free / gib:.2f} GiB)")
    return None


def point_spec(model: str, phases: list[str], T: int, c: ScalingConfig, plan: dict) -> PointSpec:
    return PointSpec(model=model, tokenizer=c.tokenizer, scenario=phases[0], phases=list(phases), seq_len=T,
                     device=c.device, dtype=canonical_dtype(c.dtype), kv_cache=bool(c.kv_cache), repeats=c.repeats,
                     warmup=c.warmup, prompt_len=c.prompt_len, time_budget_s=float(c.time_budget),
                     memory_limit_bytes=plan["memory_limit_bytes"], seed=c.seed, chunk_size=c.chunk_size,
                     threads=c.threads, decode_steps=c.decode_steps, decode_ref_len=c.decode_ref_len,
                     repeat_time_s=float(c.repeat_time), check_lengths=check_lengths(phases, T, plan))


def check_lengths(phases: list[str], T: int, plan: dict) -> list[int] | None:
    """The decode grid up to T, for the one-process Figure 7 check in the longest generate point's child."""
    gen = plan["lengths"]["generate"]
    if "generate" not in phases or "decode" not in plan["scenarios"] or not gen or T != max(gen):
        return None
    return [t for t in plan["lengths"]["decode"] if t <= T] or None


def skipped_row(model, scenario, T, failed, family, c: ScalingConfig) -> dict:
    row = {"model": model, "family": family, "scenario": scenario, "seq_len": T, "status": "skipped",
           "kv_cache": kv_label(family, c.kv_cache), "device": c.device, "dtype": c.dtype}
    if failed:
        first_T, status = failed
        row["error"] = f"not run: {status} at seq_len {first_T}"
    return row


def point_line(row: dict) -> str:
    status = row["status"]
    head = f"{row['model']:<28} {row['scenario']:<8} T={row['seq_len']:<7}"
    if status != "ok":
        color = "yellow" if status == "skipped" else "red"
        return f"{head} [{color}]{status}[/{color}] {row.get('error', '')}"[:400]
    mem = (row.get("peak_mem_bytes") or 0) / 2 ** 20
    if row["scenario"] == "prefill":
        return f"{head} ok  {row['latency_s']:.4g} s  {row['tokens_per_s']:.4g} tok/s  +{mem:.1f} MiB"
    if row["scenario"] == "decode":
        ref = (f"  (interleaved: {1000 * row['interleaved_latency_s']:.3g} ms vs {1000 * row['ref_latency_s']:.3g} "
               f"ms at T={row['ref_seq_len']})" if row.get("ref_latency_s") else "")
        return (f"{head} ok  {1000 * row['latency_s']:.3g} ms/token at context T (median of {row['repeats']})  "
                f"+{mem:.1f} MiB{ref}")
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
                    f"{opts['repeats']} timed passes (fewer once they took {opts['repeat_time']:g} s) after {opts['warmup']} untimed warm-up pass(es) over the "
                    f"first min(T, 1024) tokens. RWKV: chunked parallel mode (chunk {opts['chunk_size']}); "
                    "transformers: one pass with SDPA attention"),
        "decode": (f"the cost of one generated token at context T: in the prefill's child, from the state (RWKV) "
                   f"or KV cache (transformers) its last pass left, up to {opts['decode_steps']} greedy steps, "
                   f"each timed (latency_s: median, latency_mean_s: mean, min/max: spread); transformers {kv}. "
                   f"Without a KV cache a step is a forward over T + 1 tokens, and steps stop after "
                   f"{opts['repeat_time']:g} s. Memory: from the loaded model, so the state or KV cache at T counts. "
                   + (f"Then steps continuing the state at T alternate with steps from a state at "
                      f"{opts['decode_ref_len']} tokens (ref_latency_s, interleaved_latency_s): machine drift "
                      "hits both alike" if opts["decode_ref_len"] else "")),
        "figure 7": ("cumulative time to generate T tokens = the sum of per-token latencies at contexts 1..T, "
                     "integrated from the decode samples (latency_mean_s; a power law between grid points, "
                     "straight in log-log, constant below the first); the paper's no-cache protocol from the "
                     "prefill samples (a step at context t is a forward over t tokens: the prefill at T = t); "
                     "checked against the directly generated tokens where both exist"),
        "generate": (f"greedy decoding of T tokens after a {opts['prompt_len']}-token prompt, each step timed; "
                     f"RWKV in recurrent mode; transformers {kv}. latency_s = mean per-token time over the last "
                     "10% of positions; cumulative_s = sum of the T step times (prompt excluded, see prompt_s)"),
        "memory": ("CPU: live memory of the child: its peak RSS during the phase (the kernel's VmHWM, reset "
                   "when the phase begins; also sampled every 3 ms by the launcher), above its RSS after loading, "
                   "warm-up and malloc_trim; malloc_trim (untimed) before each phase and every 64 generate steps "
                   "returns the heap glibc keeps after free, so freed buffers do not pile up (timed steps are "
                   "not trimmed one by one: the next step would pay to fault the pages in again); decode's "
                   "held_mem_bytes is the RSS after its steps and a trim; --memory-limit is enforced "
                   "on the sampled number. Transformer points are predicted first (KV cache 2 x layers x T x d "
                   "x bytes plus activations, predicted_mem_bytes) and skipped when they cannot fit. CUDA: "
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
