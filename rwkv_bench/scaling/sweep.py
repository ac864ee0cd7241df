"""The sweep: every (scenario, length, model) point in its own child process, one CSV row each.

Order: scenario, then length (ascending), then model, so a run stopped early still compares the models
at the lengths it reached. Once a (model, scenario) fails (oom, timeout, error) at one length, its
longer lengths are recorded as `skipped`, and the sweep goes on with the others.
Rows are appended (flushed and fsynced) as soon as a point finishes; for a generate point its per-token
rows go first and its points.csv row last, so the points.csv row commits the point. `--resume` skips the
points already in points.csv and drops per-token rows of points that never committed.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..errors import UserError
from ..recording import (append_row, environment, new_run_dir, read_meta, read_rows, utc_now, write_json,
                         write_meta)
from .launcher import launch
from .points import (COLUMNS, FAILED, SCENARIOS, TOKEN_COLUMNS, PointSpec, geometric_grid, kv_label,
                     parse_models, parse_scenarios, parse_size, point_key)

KIND = "scaling"
POINTS_CSV = "points.csv"
TOKENS_CSV = "generate_tokens.csv"
WORK_DIR = "_work"       # peer checkpoints and the placeholder tokenizer; removed when the sweep ends
LOG_DIR = "logs"         # child logs of points that did not succeed

# The offline default: a matched small pair plus transformers' own RWKV on our weights, short lengths,
# so that `rwkv-bench scaling` with no flags takes about five minutes on a 2-core CPU.
DEFAULTS = {
    "models": "rwkv4-tiny,gptneox-tiny,transformers:rwkv4-tiny",
    "scenario": "prefill,generate",
    "min_len": 16,
    "max_len": 2048,
    "points": None,
    "ratio": None,
    "gen_max_len": 1024,
    "kv_cache": True,
    "device": "cpu",
    "dtype": "float32",
    "time_budget": 300.0,
    "memory_limit": None,
    "repeats": 3,
    "warmup": 1,
    "prompt_len": 16,
    "seed": 0,
    "threads": None,
    "tokenizer": None,
    "chunk_size": 1024,
}
# options that must not change when a run is resumed (the rows would not be comparable)
FIXED_ON_RESUME = ("kv_cache", "device", "dtype", "prompt_len", "seed", "chunk_size")
PEER_PREFIX = "transformers:"


# ---- options ----

def latest_run_dir(results_root: Path = Path("results")) -> Path:
    root = results_root / KIND
    runs = sorted(p.parent for p in root.glob("*/meta.json")) if root.is_dir() else []
    if not runs:
        raise UserError(f"--resume: no run directory under {root}/ to resume; pass --out DIR")
    return runs[-1]


def resolve_options(given: dict, *, resume: bool, out: str | None) -> tuple[dict, Path | None]:
    """DEFAULTS, then the resumed run's stored options, then the flags given on this command line."""
    given = {k: v for k, v in given.items() if v is not None}
    opts = dict(DEFAULTS)
    run_dir = None
    if resume:
        run_dir = Path(out) if out else latest_run_dir()
        meta = read_meta(run_dir)
        if meta.get("kind") != KIND:
            raise UserError(f"--resume: {run_dir} is not a scaling run directory (no meta.json with kind 'scaling')")
        stored = meta.get("options", {})
        for key in FIXED_ON_RESUME:
            if key in given and key in stored and given[key] != stored[key]:
                raise UserError(f"--resume: this run used {key}={stored[key]!r}; cannot change it to {given[key]!r}")
        opts.update({k: v for k, v in stored.items() if k in DEFAULTS})
    if "points" in given:
        opts["ratio"] = None  # the grid is set by one of the two
    if "ratio" in given:
        opts["points"] = None
    opts.update({k: v for k, v in given.items() if k in DEFAULTS})
    return opts, run_dir


def validate(opts: dict) -> dict:
    """Check every option cheaply, before any child is spawned; returns the parsed plan."""
    from ..commands import parse_device, parse_dtype

    models = parse_models(str(opts["models"]))
    for spec in models:
        check_model_spec(spec)
    scenarios = parse_scenarios(str(opts["scenario"]))
    for name in ("min_len", "max_len"):
        if not isinstance(opts[name], int) or opts[name] <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {opts[name]!r}")
    grid = geometric_grid(opts["min_len"], opts["max_len"], opts["points"], opts["ratio"])
    gen_max = opts["gen_max_len"] if opts["gen_max_len"] is not None else opts["max_len"]
    if gen_max <= 0:
        raise UserError(f"--gen-max-len must be positive, got {gen_max}")
    gen_grid = [t for t in grid if t <= gen_max]
    if "generate" in scenarios and not gen_grid:
        raise UserError(f"--gen-max-len {gen_max} is below --min-len {opts['min_len']}: no generate lengths")
    if not opts["time_budget"] or opts["time_budget"] <= 0:
        raise UserError(f"--time-budget must be positive seconds, got {opts['time_budget']}")
    for name in ("repeats", "prompt_len"):
        if opts[name] <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {opts[name]}")
    if opts["warmup"] < 0:
        raise UserError(f"--warmup must be zero or positive, got {opts['warmup']}")
    if opts["threads"] is not None and opts["threads"] <= 0:
        raise UserError(f"--threads must be positive, got {opts['threads']}")
    parse_device(opts["device"])
    parse_dtype(opts["dtype"])
    return {"models": models, "scenarios": scenarios, "lengths": {"prefill": grid, "generate": gen_grid},
            "memory_limit_bytes": parse_size(opts["memory_limit"])}


def check_model_spec(spec: str) -> None:
    """Reject what can never load (unknown names, missing paths) without loading anything."""
    from ..models import presets
    from ..specs import SMOLLM2_PRESET, known_presets, looks_like_hub_id, looks_like_path, smollm2_path

    name = spec[len(PEER_PREFIX):] if spec.startswith(PEER_PREFIX) else spec
    if not name:
        raise UserError(f"empty model spec in {spec!r}")
    preset = presets.split_preset(name)
    if preset is not None:
        if spec.startswith(PEER_PREFIX) and preset[0] != "rwkv4":
            raise UserError(f"{spec!r}: transformers:<preset> is only for rwkv4-* presets (transformers' own "
                            f"RwkvForCausalLM on our weights); {name!r} already runs in transformers")
        return
    if name == SMOLLM2_PRESET:
        smollm2_path()
        return
    if Path(name).expanduser().exists():
        return
    if looks_like_path(name):
        raise UserError(f"no such file or directory: {name}")
    if looks_like_hub_id(name):
        return  # can only be checked by loading it; the child records an error row if it cannot
    raise UserError(f"unknown model spec {spec!r}: not a preset ({', '.join(known_presets()[:8])}, ...), "
                    "transformers:rwkv4-<size>, an existing path, or a hub id (org/name)")


def guess_family(spec: str) -> str:
    from ..models import presets

    name = spec[len(PEER_PREFIX):] if spec.startswith(PEER_PREFIX) else spec
    preset = presets.split_preset(name)
    if preset is None:
        return ""
    return "rwkv" if preset[0] == "rwkv4" else "transformer"


# ---- what each child loads ----

def placeholder_tokenizer(work: Path) -> str:
    """Scaling feeds random token ids and never encodes text: a two-token tokenizer keeps presets offline."""
    path = work / "placeholder_tokenizer.json"
    if not path.is_file():
        from tokenizers import Tokenizer, models

        Tokenizer(models.WordLevel({"<|endoftext|>": 0, "<unk>": 1}, unk_token="<unk>")).save(str(path))
    return str(path)


def save_peer(preset: str, directory: Path, *, seed: int, tokenizer: str) -> Path:
    """transformers' RwkvForCausalLM holding exactly our preset's random weights, saved as an HF directory."""
    import torch
    from transformers import RwkvConfig, RwkvForCausalLM
    from transformers.utils import logging as hf_logging

    from ..models.loaders import RANDOM_WEIGHTS_MARKER, blinkdl_to_hf_state_dict
    from ..specs import resolve

    if (directory / "config.json").is_file():
        return directory
    ours = resolve(preset, seed=seed, tokenizer=tokenizer).model
    c = ours.config
    config = RwkvConfig(vocab_size=c.vocab_size, hidden_size=c.n_embd, num_hidden_layers=c.n_layer,
                        attention_hidden_size=c.n_embd, intermediate_size=c.ffn_dim,
                        layer_norm_epsilon=c.layer_norm_eps, rescale_every=0, tie_word_embeddings=False,
                        bos_token_id=0, eos_token_id=0)
    with torch.device("meta"):
        peer = RwkvForCausalLM(config)
    peer.load_state_dict(blinkdl_to_hf_state_dict(ours.state_dict()), strict=True, assign=True)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_logging.disable_progress_bar()  # the sweep's own progress bar is the one that matters
    peer.save_pretrained(tmp)
    (tmp / RANDOM_WEIGHTS_MARKER).write_text(f"random weights of preset {preset} (seed {seed}); "
                                             "for speed and memory measurements only\n")
    os.replace(tmp, directory)
    return directory


def model_entries(models: list[str], opts: dict, run_dir: Path) -> dict[str, dict]:
    """spec -> what the child resolves (load_spec, tokenizer, random_weights override)."""
    from ..models import presets

    work = run_dir / WORK_DIR
    entries = {}
    for spec in models:
        name = spec[len(PEER_PREFIX):] if spec.startswith(PEER_PREFIX) else spec
        is_preset = presets.split_preset(name) is not None
        tokenizer = opts["tokenizer"]
        if tokenizer is None and is_preset:
            work.mkdir(parents=True, exist_ok=True)
            tokenizer = placeholder_tokenizer(work)
        entry = {"load_spec": spec, "tokenizer": tokenizer, "random_weights": None}
        if spec.startswith(PEER_PREFIX) and is_preset:
            work.mkdir(parents=True, exist_ok=True)
            peer_dir = save_peer(name, work / f"peer-{name}-seed{opts['seed']}", seed=opts["seed"],
                                 tokenizer=placeholder_tokenizer(work))
            entry.update(load_spec=PEER_PREFIX + str(peer_dir.resolve()), random_weights=True)
        entries[spec] = entry
    return entries


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


def repair_tail(path: Path) -> None:
    """Cut a last line left incomplete by a kill, so the next appended row starts on its own line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def drop_uncommitted_token_rows(run_dir: Path, committed: set) -> int:
    """Per-token rows of a generate point whose points.csv row never got written (killed in between)."""
    path = run_dir / TOKENS_CSV
    repair_tail(path)
    tokens = read_rows(path)
    if tokens.empty:
        return 0
    keep = [point_key(m, "generate", t) in committed for m, t in zip(tokens["model"], tokens["seq_len"])]
    dropped = len(keep) - sum(keep)
    if dropped:
        tmp = path.with_suffix(".csv.tmp")
        tokens[keep].to_csv(tmp, index=False, columns=TOKEN_COLUMNS)
        os.replace(tmp, path)
    return dropped


def plan_points(plan: dict) -> list[tuple[str, int, str]]:
    return [(scenario, T, model) for scenario in plan["scenarios"] for T in plan["lengths"][scenario]
            for model in plan["models"]]


def estimated_cost_s(scenario: str, T: int) -> float:
    """Rough seconds per point on a small CPU model, only to weight the progress bar's ETA."""
    return 4.0 + (T * 2e-4 if scenario == "prefill" else T * 1e-2)


def run_sweep(given: dict, *, out: str | None = None, resume: bool = False, report: bool = True,
              console=None) -> Path:
    """The plain function behind `rwkv-bench scaling`. Returns the run directory."""
    opts, run_dir = resolve_options(given, resume=resume, out=out)
    plan = validate(opts)
    if run_dir is None:
        run_dir = new_run_dir(KIND, out)
        if (run_dir / POINTS_CSV).is_file() and (run_dir / POINTS_CSV).stat().st_size:
            raise UserError(f"{run_dir} already holds a {POINTS_CSV}: use --resume to continue it, or another --out")
    t0 = time.perf_counter()
    points_csv, tokens_csv = run_dir / POINTS_CSV, run_dir / TOKENS_CSV
    if resume and (run_dir / "meta.json").is_file():
        # rows of a resumed run come from more than one command (and maybe revision): record each resume
        meta = read_meta(run_dir)
        env = environment(opts["device"], opts["dtype"])
        changed = {k: v for k, v in opts.items() if (meta.get("options") or {}).get(k) != v}
        meta.setdefault("resumes", []).append({"date_utc": env["date_utc"], "command": env["command"],
                                               "git_revision": env["git_revision"], "changed_options": changed})
        meta.update(options=opts, lengths=plan["lengths"], models=plan["models"], completed=False, **protocol(opts))
        write_json(run_dir / "meta.json", meta)
    else:
        meta = write_meta(run_dir, kind=KIND, device=opts["device"], dtype=opts["dtype"], options=opts,
                          lengths=plan["lengths"], models=plan["models"], completed=False, **protocol(opts))
    repair_tail(points_csv)
    rows = read_rows(points_csv)
    done = committed_keys(rows)
    drop_uncommitted_token_rows(run_dir, done)
    failures = first_failures(rows)
    families = {} if rows.empty else {str(r.model): str(r.family) for r in rows.itertuples()
                                      if isinstance(r.family, str) and r.family}
    todo = [p for p in plan_points(plan) if point_key(p[2], p[0], p[1]) not in done]
    entries = model_entries(plan["models"], opts, run_dir) if todo else {}
    console = console or make_console()
    try:
        with make_progress(console) as progress:
            total = sum(estimated_cost_s(s, T) for s, T, _ in todo)
            task = progress.add_task("starting", total=max(total, 1e-9), points=f"0/{len(todo)}")
            for i, (scenario, T, model) in enumerate(todo):
                progress.update(task, description=f"{model} {scenario} T={T}", points=f"{i}/{len(todo)}")
                failed = failures.get((model, scenario))
                if failed and failed[0] < T:
                    row = skipped_row(model, scenario, T, failed, families.get(model) or guess_family(model), opts)
                else:
                    spec = point_spec(model, entries[model], scenario, T, opts, plan)
                    result = launch(spec, run_dir / LOG_DIR)
                    row = {**result, "model": model, "scenario": scenario, "seq_len": T}
                    row.setdefault("family", families.get(model) or guess_family(model))
                    row.setdefault("kv_cache", kv_label(row["family"], opts["kv_cache"]))
                    row.setdefault("device", opts["device"])
                    row.setdefault("dtype", opts["dtype"])
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
        shutil.rmtree(run_dir / WORK_DIR, ignore_errors=True)
        log_dir = run_dir / LOG_DIR
        if log_dir.is_dir() and not any(log_dir.iterdir()):
            log_dir.rmdir()
    meta = read_meta(run_dir)
    meta.update(completed=True, finished_utc=utc_now(),
                sweep_wall_s=meta.get("sweep_wall_s", 0) + (time.perf_counter() - t0),
                model_info=model_info(read_rows(points_csv)))
    write_json(run_dir / "meta.json", meta)
    if report:
        from .report import render

        render(run_dir)
    return run_dir


def point_spec(model: str, entry: dict, scenario: str, T: int, opts: dict, plan: dict) -> PointSpec:
    extra = {"threads": opts["threads"]} if opts["threads"] else {}
    return PointSpec(model=model, load_spec=entry["load_spec"], tokenizer=entry["tokenizer"],
                     random_weights=entry["random_weights"], scenario=scenario, seq_len=T,
                     device=opts["device"], dtype=canonical_dtype(opts["dtype"]), kv_cache=bool(opts["kv_cache"]),
                     repeats=opts["repeats"], warmup=opts["warmup"], prompt_len=opts["prompt_len"],
                     time_budget_s=float(opts["time_budget"]), memory_limit_bytes=plan["memory_limit_bytes"],
                     seed=opts["seed"], chunk_size=opts["chunk_size"], extra=extra)


def canonical_dtype(name: str) -> str:
    from ..commands import DTYPES

    return DTYPES[name.lower()]


def skipped_row(model, scenario, T, failed, family, opts) -> dict:
    first_T, status = failed
    return {"model": model, "family": family, "scenario": scenario, "seq_len": T, "status": "skipped",
            "kv_cache": kv_label(family, opts["kv_cache"]), "device": opts["device"], "dtype": opts["dtype"],
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


def protocol(opts: dict) -> dict:
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
        "memory": ("CPU: peak RSS of the child (sampled every 2 ms, plus getrusage ru_maxrss) above its RSS "
                   "after loading and warm-up; CUDA: torch.cuda.max_memory_allocated above memory_allocated "
                   "before the measured runs. weights_bytes is reported separately"),
        "isolation": "every point in a fresh subprocess; the time budget counts from the end of loading",
        "tokenizer": "presets use a placeholder tokenizer (no text is encoded)" if opts["tokenizer"] is None
        else opts["tokenizer"],
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
