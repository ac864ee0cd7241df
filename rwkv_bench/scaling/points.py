"""The length grid, the CSV columns, and the spec of one measured point (sent to the child as JSON)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import UserError

SCENARIOS = ("prefill", "generate")
FAILED = ("oom", "timeout", "error")  # a (model, scenario) stops at the first of these

# points.csv: one row per (model, scenario, seq_len). Names are a contract: add columns, never rename.
COLUMNS = [
    "model", "family", "implementation", "scenario", "seq_len", "status",
    "latency_s",          # prefill: median forward pass; generate: mean per-token time over the last 10% of positions
    "latency_min_s", "latency_max_s",  # prefill: spread over repeats; generate: min/max per-token time in that window
    "repeats",            # prefill: timed forward passes (fewer than asked when the time budget would not allow)
    "cumulative_s",       # generate: total decode time for seq_len tokens (prompt prefill excluded, see prompt_s)
    "tokens_per_s",       # prefill: seq_len / latency_s; generate: seq_len / cumulative_s
    "prompt_len", "prompt_s",
    "peak_mem_bytes",     # peak during the measured runs above the baseline (model loaded and warmed up)
    "peak_total_bytes",   # the absolute peak (CPU: process RSS; CUDA: max_memory_allocated)
    "baseline_bytes", "weights_bytes", "mem_method",
    "kv_cache",           # true / false for transformers' generation protocol; n.a. for RWKV
    "random_weights", "device", "dtype", "threads",
    "load_s", "wall_s", "positions_per_row", "error",
]

# generate_tokens.csv: per-position decode latency of every generate point.
TOKEN_COLUMNS = ["model", "seq_len", "position", "latency_s", "n_positions", "cumulative_s", "kv_cache"]

DEFAULT_MAX_TOKEN_ROWS = 2048  # beyond this many positions, rows average consecutive positions (n_positions > 1)


def geometric_grid(min_len: int, max_len: int, points: int | None = None, ratio: float | None = None) -> list[int]:
    """Integer lengths spaced evenly on a log scale from min_len to max_len, both included.

    `points` fixes the count; otherwise `ratio` (default 2) sets the step and the count is rounded so the
    grid ends exactly at max_len. Rounding can merge neighbours at short lengths; duplicates are dropped.
    """
    if min_len <= 0 or max_len <= 0:
        raise UserError(f"lengths must be positive, got --min-len {min_len} --max-len {max_len}")
    if min_len > max_len:
        raise UserError(f"--min-len {min_len} is larger than --max-len {max_len}")
    if points is not None and ratio is not None:
        raise UserError("give --points or --ratio, not both")
    if points is not None and points <= 0:
        raise UserError(f"--points must be positive, got {points}")
    if ratio is not None and not ratio > 1:
        raise UserError(f"--ratio must be greater than 1, got {ratio}")
    if min_len == max_len:
        return [min_len]
    if points is None:
        ratio = ratio or 2.0
        points = max(2, round(math.log(max_len / min_len) / math.log(ratio)) + 1)
    if points == 1:
        return [max_len]
    step = math.log(max_len / min_len) / (points - 1)
    grid = {min_len, max_len}
    grid.update(int(round(min_len * math.exp(i * step))) for i in range(1, points - 1))
    return sorted(grid)


def parse_scenarios(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UserError("--scenario needs at least one of: prefill, generate")
    for name in names:
        if name not in SCENARIOS:
            raise UserError(f"unknown scenario {name!r}: use prefill, generate or both (comma-separated)")
    return [s for s in SCENARIOS if s in names]  # canonical order, no duplicates


@dataclass
class PointSpec:
    """Everything the child needs to measure one point; written to a JSON file it reads."""
    model: str                      # the spec the user gave: parsed and loaded in the child, the tables' label
    scenario: str
    seq_len: int
    device: str = "cpu"
    dtype: str = "float32"
    kv_cache: bool = True
    repeats: int = 3
    warmup: int = 1
    prompt_len: int = 16
    time_budget_s: float = 300.0
    memory_limit_bytes: int | None = None
    seed: int = 0
    chunk_size: int = 1024
    max_positions: int | None = None
    tokenizer: str | None = None
    threads: int | None = None
    max_token_rows: int = DEFAULT_MAX_TOKEN_ROWS
    result_path: str = ""
    loaded_path: str = ""           # the child touches this file once the model is loaded (budget starts)
    region_path: str = ""           # the child writes its memory baseline here when the measured runs begin

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "PointSpec":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, path: Path) -> Path:
        path.write_text(self.to_json())
        return path


def point_key(model: str, scenario: str, seq_len: int) -> tuple[str, str, int]:
    return (str(model), str(scenario), int(seq_len))


def kv_label(family: str, kv_cache: bool) -> str:
    """The kv_cache column: true/false for transformers, n.a. for RWKV (it carries a fixed-size state)."""
    if family != "transformer":
        return "n.a."
    return "true" if kv_cache else "false"
