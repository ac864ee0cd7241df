"""The sweep: every (scenario, length, model) point in a fresh child process, one CSV row each.

One child per (length, model) measures its prefill, decode and generate in turn (plan.py: the order). Once a
(model, scenario) fails (oom, timeout, error) at one length, its longer lengths are recorded as `skipped`
(decode also after its prefill failed: it needs the prefill), and the sweep goes on with the others. Before a
transformer point runs, its KV cache and activations are predicted (predict.py); a point that cannot fit the
free memory or --memory-limit is recorded as `skipped` with the predicted size. Our RWKV models measure the
compiled WKV kernel: the sweep stops before measuring anything when it cannot be had, unless
--allow-reference. Rows go to the run directory through store.py as soon as a point finishes; `--resume`
skips the points already in points.csv.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..console import progress_bar, stderr_console
from ..options import as_dict
from ..recording import open_run
from ..specs import OURS
from . import protocol, store
from .bandwidth import step_bandwidth
from .config import ScalingConfig, resolve
from .estimate import model_size
from .launcher import launch
from .plan import children, plan_points, plan_text, point_cost_s
from .points import SERVE, PointSpec
from .predict import available_bytes, memory_refusal, predict, transformer_dims
from .store import FAILED, kv_label, point_key


def prepare_peers(c: ScalingConfig) -> None:
    """transformers:rwkv4-<size> is saved once in the parent, so every child loads the same directory."""
    from ..models.peer import peer_cache_dir, save_peer

    for spec in c.specs:
        if spec.kind == "preset" and spec.runner == "transformers" and spec.family == "rwkv":
            save_peer(spec.location, peer_cache_dir(spec.location, c.seed), seed=c.seed)


def wkv_mode(c: ScalingConfig, console) -> str | None:
    """RWKV_BENCH_WKV for the children: "kernel" once the kernels our models need (WKV-4, WKV-7) are built or
    loaded here (a child then fails rather than fall back), "reference" when one cannot be had and
    --allow-reference was given; raises KernelUnavailable (one line, exit 2) otherwise. None when no model
    runs our WKV."""
    ours = [spec for spec in c.specs if spec.runner == OURS]
    if not ours:
        return None
    from ..ops import wkv, wkv7
    from ..ops.compiled import KernelUnavailable

    # a preset names its RWKV version; a checkpoint says it only when loaded, so it needs both kernels
    rwkv7 = [spec.kind == "preset" and spec.location.startswith("rwkv7-") for spec in ours]
    try:
        if not all(rwkv7):
            wkv.require_kernel(c.device)
        if any(rwkv7) or not all(spec.kind == "preset" for spec in ours):
            wkv7.require_kernel(c.device)
        return "kernel"
    except KernelUnavailable as exc:
        if not c.allow_reference:
            raise
        console.print(f"--allow-reference: our RWKV models run the PyTorch reference WKV ({exc})", soft_wrap=True)
        return "reference"


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


def run_sweep(given: dict, *, out: str | None = None, resume: bool = False, report: bool = True,
              console=None) -> Path:
    """The plain function behind `rwkv-bench scaling`. Returns the run directory."""
    run_dir, old_meta = open_run(store.KIND, out=out, resume=resume, results=(store.POINTS_CSV,))
    config = resolve(given, (old_meta or {}).get("options"))
    console = console or stderr_console()
    rows = store.read_points(run_dir)  # before meta.json is touched: a corrupt points.csv leaves the run as it was
    wkv = wkv_mode(config, console)
    machine = measure_machine(config, (old_meta or {}).get("machine") or {})
    store.start(run_dir, as_dict(config), old_meta, lengths=config.lengths, models=config.model_names,
                protocol=protocol.describe(config), machine=machine)
    copy_gbs = (machine.get("memory_bandwidth") or {}).get("copy_gbs")
    t0 = time.perf_counter()
    done = committed_keys(rows)
    store.drop_uncommitted_tokens(run_dir, done)
    failures = first_failures(rows)
    families = {spec.text: spec.family for spec in config.specs}
    if not rows.empty:
        families.update({r.model: r.family for r in rows.itertuples() if r.family})
    todo = [p for p in plan_points(config) if point_key(p[2], p[0], p[1]) not in done]
    dims = {spec.text: transformer_dims(spec) for spec in config.specs}
    sizes = {spec.text: model_size(spec, dims[spec.text]) for spec in config.specs}
    costs = {p: point_cost_s(p, config, sizes, dims) for p in todo}
    console.print(plan_text(config, todo, costs, sizes), soft_wrap=True)
    if todo:
        prepare_peers(config)
    try:
        with progress_bar(bool(todo), console=console, unit="points") as progress:
            task = progress.add_task("starting", total=max(sum(costs.values()), 1e-9), done=f"0/{len(todo)}")
            done_points = 0
            for phases, T, model in children(todo):
                progress.update(task, description=f"{model} {'+'.join(phases)} T={T}",
                                done=f"{done_points}/{len(todo)}")
                for row in run_child(phases, T, model, config, run_dir, failures, families, dims.get(model), wkv,
                                     copy_gbs):
                    store.append_point(run_dir, row)
                    progress.console.print(point_line(row), soft_wrap=True)
                    progress.update(task, advance=costs.get((row["scenario"], T, model), 0.0))
                done_points += len(phases)
                progress.update(task, done=f"{done_points}/{len(todo)}")
            progress.update(task, description="done")
        if SERVE in config.scenarios:
            from .serving import run_serving

            console.print(plan_serving_text(config), soft_wrap=True)
            run_serving(config, run_dir, wkv, machine, lambda line: console.print(line, soft_wrap=True))
    finally:
        log_dir = run_dir / store.LOG_DIR
        if log_dir.is_dir() and not any(log_dir.iterdir()):
            log_dir.rmdir()
    store.finish(run_dir, wall_s=time.perf_counter() - t0)
    if report:
        from ..report.build import render_run  # the kind's tables and figures, then index.md

        render_run(run_dir)
    return run_dir


def measure_machine(c: ScalingConfig, measured: dict) -> dict:
    """meta.json's `machine`: the copy bandwidth the decode rows are set against, and serve's memory budget
    (--memory-limit, else the memory free now). A resume keeps what its run `measured` (its rows' bandwidth
    fractions were computed against it) and adds only what is missing."""
    machine = dict(measured)
    if "memory_bandwidth" not in machine and {"decode", SERVE} & set(c.scenarios) and not c.device.startswith("cuda"):
        from .bandwidth import copy_bandwidth_gbs

        machine["memory_bandwidth"] = copy_bandwidth_gbs(c.threads)
    if SERVE in c.scenarios and "memory_budget_bytes" not in machine:
        free = available_bytes()
        machine.update(free_memory_bytes=free, memory_budget_bytes=c.memory_limit_bytes or free,
                       memory_budget_source="--memory-limit" if c.memory_limit_bytes else "free memory at start")
    return machine


def with_bandwidth(row: dict, copy_gbs: float | None) -> dict:
    """A decode row's bytes read per step (weights, and the state or KV cache at T) over its median step."""
    if row.get("scenario") == "decode" and row.get("status") == "ok" and row.get("step_weights_bytes"):
        row["step_read_bytes"] = row["step_weights_bytes"] + (row.get("state_bytes") or 0)
        row.update(step_bandwidth(row["step_read_bytes"], row.get("latency_s"), copy_gbs))
    return row


def plan_serving_text(c: ScalingConfig) -> str:
    from .serving import serve_points

    points = serve_points(c)
    return (f"serve: {len(points)} points (one child each: model, T, B), then each (model, T)'s capacity "
            f"confirmed where it is at most B={c.confirm_max_batch:,}")


def run_child(phases: list[str], T: int, model: str, c: ScalingConfig, run_dir: Path, failures: dict,
              families: dict, dims, wkv: str | None, copy_gbs: float | None = None) -> list[dict]:
    """The rows of one child's phases: skipped without running (an earlier failure, a predicted size that does
    not fit), or measured."""
    predicted = predict(dims, T, phases, c.kv_cache, c.dtype, c.prompt_len)
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
    too_big = memory_refusal(predicted.get("predicted_mem_bytes"), c.memory_limit_bytes) if run else None
    if too_big:
        for phase in run:
            rows[phase] = {**skipped_row(model, phase, T, None, families.get(model, ""), c), **predicted,
                           "error": too_big}
        run = []
    if run:
        results = launch(point_spec(model, run, T, c, wkv), run_dir / store.LOG_DIR)
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
            rows[phase] = with_bandwidth(row, copy_gbs)
    return [rows[phase] for phase in phases]


def point_spec(model: str, phases: list[str], T: int, c: ScalingConfig, wkv: str | None) -> PointSpec:
    return PointSpec(model=model, tokenizer=c.tokenizer, scenario=phases[0], phases=list(phases), seq_len=T,
                     device=c.device, dtype=c.dtype, kv_cache=c.kv_cache, repeats=c.repeats, warmup=c.warmup,
                     prompt_len=c.prompt_len, time_budget_s=float(c.time_budget),
                     memory_limit_bytes=c.memory_limit_bytes, seed=c.seed, chunk_size=c.chunk_size,
                     threads=c.threads, decode_steps=c.decode_steps, decode_ref_len=c.decode_ref_len,
                     repeat_time_s=float(c.repeat_time), check_lengths=check_lengths(phases, T, c), wkv=wkv)


def check_lengths(phases: list[str], T: int, c: ScalingConfig) -> list[int] | None:
    """The decode grid up to T, for the one-process Figure 7 check in the longest generate point's child."""
    gen = c.lengths["generate"]
    if "generate" not in phases or "decode" not in c.scenarios or not gen or T != max(gen):
        return None
    return [t for t in c.lengths["decode"] if t <= T] or None


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


