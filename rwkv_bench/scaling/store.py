"""A scaling run directory's format: its files, their columns and types, and the one reader and writer of each.

    points.csv           one row per (model, scenario, seq_len): COLUMNS
    generate_tokens.csv  per-position decode latency of every generate point: TOKEN_COLUMNS
    serving.csv          one row per (model, seq_len, batch) of the serve scenario: SERVING_COLUMNS
    meta.json            recording's environment keys, plus META_KEYS (written by `start` and `finish`)
    logs/                child logs of points that did not succeed

The sweep writes only through `start`, `append_point`, `append_serving`, `drop_uncommitted_tokens` and
`finish`; the report and a resume read only through `read_points`, `read_tokens`, `read_serving` and
`read_meta`. Column names are a contract:
add columns, never rename.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..recording import append_rows, finish_meta, read_meta, read_rows, resume_meta, rewrite_rows, start_meta

if TYPE_CHECKING:  # pandas is imported where used: a scaling child imports this module, and needs no pandas
    import pandas as pd

KIND = "scaling"
POINTS_CSV = "points.csv"
TOKENS_CSV = "generate_tokens.csv"
SERVING_CSV = "serving.csv"
LOG_DIR = "logs"

# meta.json keys a scaling run adds to recording's environment: the options as resolved, the grid per scenario,
# the model specs as typed, how each scenario is measured; at the end the sweep's wall time and each model's
# identity (family, implementation, weights, state bytes per sequence); `machine`: the memory bandwidth measured
# at the start of the sweep (bandwidth.py) and, for serve, the memory budget of the capacity table
META_KEYS = ("options", "lengths", "models", "protocol", "sweep_wall_s", "model_info", "machine")

STATUSES = ("ok", "oom", "timeout", "error", "skipped")
FAILED = ("oom", "timeout", "error")  # a (model, scenario) stops at the first of these

COLUMNS = [
    "model", "family", "implementation", "scenario", "seq_len", "status",
    "latency_s",          # prefill: median forward pass; decode: median step at context T (prompt_len = T);
                          # generate: mean per-token time over the last 10% of positions
    "latency_min_s", "latency_max_s",  # prefill: spread over repeats; generate: min/max per-token time in that window
    "repeats",            # prefill: timed forward passes (fewer than asked when the time budget would not allow);
                          # decode: timed steps
    "cumulative_s",       # generate: total decode time for seq_len tokens (prompt prefill excluded, see prompt_s)
    "tokens_per_s",       # prefill: seq_len / latency_s; generate: seq_len / cumulative_s
    "prompt_len", "prompt_s",  # generate: the prompt; decode: the context T and the time of its prefill
    "peak_mem_bytes",     # peak during the measured runs above the baseline (model loaded and warmed up)
    "peak_total_bytes",   # the absolute peak (CPU: process RSS; CUDA: max_memory_allocated)
    "baseline_bytes",     # the child's memory once loaded and warmed up (CPU: RSS after malloc_trim)
    "weights_bytes", "mem_method",
    "kv_cache",           # true / false for transformers' generation protocol; n.a. for RWKV
    "random_weights", "device", "dtype", "threads",
    "load_s", "wall_s", "positions_per_row", "error",
    "latency_mean_s",     # decode: mean of the timed steps (what a sum of steps, i.e. Figure 7, integrates)
    "predicted_mem_bytes",  # transformers: the memory predicted before the point ran (KV cache + activations)
    "kv_cache_bytes",     # transformers with a KV cache: 2 x layers x T x d x bytes, analytic
    "ref_seq_len",        # decode: context of a reference state whose steps alternated with those at T
    "ref_latency_s",      # decode: median step at ref_seq_len, interleaved
    "interleaved_latency_s",  # decode: median step at T during the same interleaving
    "ref_steps",          # decode: interleaved pairs timed
    "held_mem_bytes",     # decode: memory held after the steps above the loaded model (the state or KV cache at T;
                          # RSS after malloc_trim); peak_mem_bytes adds a step's transients
    # generate at the longest generate length: Figure 7's method checked in one process (measure.figure7_check)
    "check_direct_s",     # T tokens generated one by one, interleaved with decode samples at the grid lengths
    "check_integrated_s",  # those samples' means integrated to T as the report integrates the decode points
    "check_samples",      # decode samples taken
    "state_bytes",        # analytic bytes of one sequence's state or KV cache at the phase's context (T; generate:
                          # T + prompt): RWKV a constant, a transformer 2 x layers x T x kv width x bytes
                          # (Backend.sequence_state_bytes)
    "step_weights_bytes",  # the weights a decode step reads: all but the input embedding table (one row gathered)
    "step_read_bytes",    # decode: what one step must read, step_weights_bytes + state_bytes
    "bandwidth_gbs",      # decode: step_read_bytes / latency_s, in GB/s (1e9 bytes)
    "bandwidth_fraction",  # decode: bandwidth_gbs over the machine's copy bandwidth (meta.json machine)
]

SERVING_COLUMNS = [
    "model", "family", "implementation", "seq_len", "batch", "role", "status",
    # role: grid (--batch-sizes) or capacity (the largest B predicted to fit the memory budget, run to confirm)
    "prefill",            # distinct: B different prompts prefilled in one batched call; copies: one prefilled, its
                          # state or KV cache repeated B times (B x T past --prefill-token-budget)
    "prefill_s",          # the batched prefill (copies: one prompt's prefill plus the copying)
    "prefill_tokens_per_s",  # distinct only: B x T / prefill_s
    "step_median_s", "step_p90_s", "step_min_s", "step_max_s", "steps",  # a step advances all B rows one token
    "decode_tokens_per_s",   # aggregate: B x steps / their summed time
    "held_mem_bytes",     # RSS after the steps and a trim, above the loaded model: the B states or KV caches
    "held_per_seq_bytes",  # held_mem_bytes / B
    "states_held_bytes",  # the same before the first step: the B states or KV caches alone (no step's buffers)
    "peak_mem_bytes", "peak_total_bytes", "baseline_bytes", "mem_method",
    "state_bytes",        # analytic bytes of one sequence's state or KV cache at T
    "predicted_mem_bytes",  # B x state_bytes plus the prefill's activations, predicted before the point ran
    "weights_bytes", "step_weights_bytes",  # all weights; those a step reads (not the input embedding table)
    "step_read_bytes",    # step_weights_bytes + B x state_bytes: what one step must read
    "bandwidth_gbs", "bandwidth_fraction",  # step_read_bytes / step_median_s (GB/s), and over the copy bandwidth
    "random_weights", "device", "dtype", "threads", "load_s", "wall_s", "error",
]
# read as text ("" for a missing value); seq_len as int; random_weights as True / False / None; the rest numbers
TEXT_COLUMNS = ("family", "implementation", "kv_cache", "status", "error", "mem_method")
SERVING_TEXT_COLUMNS = ("family", "implementation", "status", "error", "mem_method", "prefill", "role")

TOKEN_COLUMNS = ["model", "seq_len", "position", "latency_s", "n_positions", "cumulative_s", "kv_cache"]
MAX_TOKEN_ROWS = 2048  # beyond this many positions, rows average consecutive positions (n_positions > 1)


def point_key(model: str, scenario: str, seq_len: int) -> tuple[str, str, int]:
    """What identifies a points.csv row (a resume skips the keys already there)."""
    return (str(model), str(scenario), int(seq_len))


def serve_key(model: str, seq_len: int, batch: int) -> tuple[str, int, int]:
    """What identifies a serving.csv row."""
    return (str(model), int(seq_len), int(batch))


def kv_label(family: str, kv_cache: bool) -> str:
    """The kv_cache column: true/false for transformers, n.a. for RWKV (it carries a fixed-size state)."""
    if family != "transformer":
        return "n.a."
    return "true" if kv_cache else "false"


# ---- writers ----

def start(run_dir: Path, options: dict, old_meta: dict | None, **fields) -> None:
    """meta.json of a new run, or a resume's entry appended to the old one. `fields`: lengths, models, protocol,
    machine."""
    unknown = set(fields) - set(META_KEYS)
    assert not unknown, f"not a scaling meta.json key: {unknown}"
    if old_meta is not None:
        resume_meta(run_dir, old_meta, options, **fields)
    else:
        start_meta(run_dir, KIND, options, completed=False, **fields)


def append_point(run_dir: Path, row: dict) -> None:
    """One points.csv row (a generate point's per-token rows go first: the points.csv row commits the point)."""
    tokens = row.pop("token_rows", None) or []
    if tokens:
        append_rows(run_dir / TOKENS_CSV, [{"model": row["model"], "seq_len": row["seq_len"],
                                            "kv_cache": row["kv_cache"], **tok} for tok in tokens], TOKEN_COLUMNS)
    row["error"] = " ".join(str(row.get("error") or "").split())  # one line in the CSV
    append_rows(run_dir / POINTS_CSV, [row], COLUMNS)


def append_serving(run_dir: Path, row: dict) -> None:
    row["error"] = " ".join(str(row.get("error") or "").split())
    append_rows(run_dir / SERVING_CSV, [row], SERVING_COLUMNS)


def drop_uncommitted_tokens(run_dir: Path, committed: set) -> int:
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


def finish(run_dir: Path, wall_s: float) -> None:
    """meta.json's end: completed, the wall time of every sweep on this run summed, each model's identity."""
    finish_meta(run_dir, sweep_wall_s=read_meta(run_dir).get("sweep_wall_s", 0) + wall_s,
                model_info=model_info(read_points(run_dir), read_serving(run_dir)))



def model_info(points: pd.DataFrame, serving: pd.DataFrame | None = None) -> dict:
    import pandas as pd

    info = {}
    rows = pd.concat([df for df in (points, serving) if df is not None and not df.empty], ignore_index=True) \
        if not (points.empty and (serving is None or serving.empty)) else points
    if rows.empty:
        return info
    for r in rows[rows["status"] == "ok"].itertuples():
        info.setdefault(str(r.model), {"family": r.family, "implementation": r.implementation,
                                       "random_weights": bool(r.random_weights),
                                       "weights_bytes": int(r.weights_bytes)})
    for model, state in state_sizes(points).items():
        info.setdefault(model, {})["state_bytes"] = state
    for model, state in state_sizes(serving_as_points(serving)).items():
        info.setdefault(model, {}).setdefault("state_bytes", state)
    return info


def serving_as_points(serving: pd.DataFrame | None) -> pd.DataFrame:
    """serve rows with the columns state_sizes reads (their context is T)."""
    import pandas as pd

    if serving is None or serving.empty:
        return pd.DataFrame()
    return serving.assign(scenario="serve", prompt_len=0)


def state_sizes(points: pd.DataFrame) -> dict:
    """model -> {"per_sequence": bytes at its longest context, "at_seq_len": that context, "per_token": bytes
    per token of context (0 for a fixed-size state)} from the state_bytes column (ok rows)."""
    import pandas as pd

    out = {}
    if points.empty or "state_bytes" not in points:
        return out
    ok = points[(points["status"] == "ok") & pd.to_numeric(points["state_bytes"], errors="coerce").notna()]
    for model, rows in ok.groupby("model", sort=False):
        context = rows["seq_len"] + rows["scenario"].eq("generate") * pd.to_numeric(rows["prompt_len"],
                                                                                    errors="coerce").fillna(0)
        pairs = sorted(zip(context.astype(int), rows["state_bytes"].astype(float)))
        (t0, b0), (t1, b1) = pairs[0], pairs[-1]
        per_token = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        out[str(model)] = {"per_sequence": int(b1), "at_seq_len": int(t1), "per_token": per_token}
    return out


# ---- readers ----

def as_bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def read_typed(path: Path, text_columns, int_columns, key) -> pd.DataFrame:
    """A results CSV as the report uses it: model and `text_columns` as strings (empty for a missing value),
    `int_columns` as integers, random_weights as a bool; the last row of each `key` wins (a resumed point
    replaces its earlier row)."""
    import pandas as pd

    rows = read_rows(path)
    if rows.empty:
        return rows
    rows["model"] = rows["model"].astype(str)
    for col in int_columns:
        rows[col] = rows[col].astype(int)
    for col in text_columns:
        if col in rows:
            rows[col] = rows[col].map(lambda v: "" if pd.isna(v) else str(v))
    if "random_weights" in rows:
        rows["random_weights"] = rows["random_weights"].map(as_bool)
    return rows.drop_duplicates(list(key), keep="last")


def read_points(run_dir: Path) -> pd.DataFrame:
    """points.csv with its types (see TEXT_COLUMNS), one row per (model, scenario, seq_len)."""
    return read_typed(Path(run_dir) / POINTS_CSV, TEXT_COLUMNS, int_columns=("seq_len",),
                      key=("model", "scenario", "seq_len"))


def read_serving(run_dir: Path) -> pd.DataFrame:
    """serving.csv with its types, one row per (model, seq_len, batch)."""
    return read_typed(Path(run_dir) / SERVING_CSV, SERVING_TEXT_COLUMNS, int_columns=("seq_len", "batch"),
                      key=("model", "seq_len", "batch"))


def read_tokens(run_dir: Path) -> pd.DataFrame:
    tokens = read_rows(Path(run_dir) / TOKENS_CSV)
    if not tokens.empty:
        tokens["model"] = tokens["model"].astype(str)
    return tokens


def load_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(points, tokens, meta) of a run directory."""
    return read_points(run_dir), read_tokens(run_dir), read_meta(run_dir)
