"""The length grid, the CSV columns, and the spec of one measured point (sent to the child as JSON)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import UserError

SCENARIOS = ("prefill", "decode", "generate")
# measured in one child per (model, T), in this order: the prefill builds the state decode starts from, and the
# tokens generated one by one run in the same process as the decode samples they check
PAIRED = ("prefill", "decode", "generate")
FAILED = ("oom", "timeout", "error")  # a (model, scenario) stops at the first of these

# points.csv: one row per (model, scenario, seq_len). Names are a contract: add columns, never rename.
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
    "baseline_bytes", "weights_bytes", "mem_method",
    "kv_cache",           # true / false for transformers' generation protocol; n.a. for RWKV
    "random_weights", "device", "dtype", "threads",
    "load_s", "wall_s", "positions_per_row", "error",
    # added with the decode scenario (cost per generated token at context T)
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
        raise UserError("--scenario needs at least one of: prefill, decode, generate")
    for name in names:
        if name not in SCENARIOS:
            raise UserError(f"unknown scenario {name!r}: use prefill, decode and/or generate (comma-separated)")
    return [s for s in SCENARIOS if s in names]  # canonical order, no duplicates


@dataclass
class PointSpec:
    """Everything the child needs to measure one point; written to a JSON file it reads."""
    model: str                      # the spec the user gave: parsed and loaded in the child, the tables' label
    scenario: str                   # the first of `phases`
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
    phases: list[str] | None = None  # scenarios measured in this child, in order (default: [scenario])
    decode_steps: int = 32
    decode_ref_len: int = 0
    repeat_time_s: float = 20.0
    check_lengths: list[int] | None = None  # generate: decode grid lengths <= T for the one-process Figure 7 check
    result_path: str = ""
    loaded_path: str = ""           # the child touches this file once the model is loaded (budget starts)
    region_path: str = ""           # stem of the files that mark each phase's measured region (region_files)

    def __post_init__(self):
        self.phases = list(self.phases or [self.scenario])
        self.scenario = self.phases[0]

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


def region_files(region_path: str, phase: str) -> tuple[Path, Path]:
    """(begin, end) marker files of one phase's measured region: the child writes its memory baseline into
    `begin` when the region opens and creates `end` when it closes; the launcher samples RSS in between."""
    return Path(f"{region_path}.{phase}.json"), Path(f"{region_path}.{phase}.end")


def point_key(model: str, scenario: str, seq_len: int) -> tuple[str, str, int]:
    return (str(model), str(scenario), int(seq_len))


def kv_label(family: str, kv_cache: bool) -> str:
    """The kv_cache column: true/false for transformers, n.a. for RWKV (it carries a fixed-size state)."""
    if family != "transformer":
        return "n.a."
    return "true" if kv_cache else "false"
