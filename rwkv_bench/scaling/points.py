"""The length grid, the scenarios, and the spec of one measured point (sent to the child as JSON)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import UserError
from .store import MAX_TOKEN_ROWS

# measured in one child per (model, T), in this order: the prefill builds the state decode starts from, and the
# tokens generated one by one run in the same process as the decode samples they check
SCENARIOS = ("prefill", "decode", "generate")
SERVE = "serve"  # B sequences at context T decoded together: one child per (model, T, B), rows in serving.csv


def geometric_grid(min_len: int, max_len: int, points: int | None = None, ratio: float | None = None) -> list[int]:
    """Integer lengths spaced evenly on a log scale from min_len to max_len, both included.

    `points` fixes the count; otherwise `ratio` (default 2) sets the step and the count is rounded so the
    grid ends exactly at max_len. Rounding can merge neighbours at short lengths; duplicates are dropped.
    The arguments are checked once, where the options are parsed (ScalingConfig).
    """
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
        raise UserError("--scenario needs at least one of: prefill, decode, generate, serve")
    for name in names:
        if name not in (*SCENARIOS, SERVE):
            raise UserError(f"unknown scenario {name!r}: use prefill, decode, generate and/or serve "
                            "(comma-separated)")
    return [s for s in (*SCENARIOS, SERVE) if s in names]  # canonical order, no duplicates


@dataclass
class PointSpec:
    """Everything the child needs to measure one point; written to a JSON file it reads."""
    model: str                      # the spec the user gave: parsed and loaded in the child, the tables' label
    scenario: str                   # the first of `phases`
    seq_len: int                    # T, tokens of context
    device: str = "cpu"
    dtype: str = "float32"
    kv_cache: bool = True           # transformers decode with their KV cache (else re-run all T per token)
    repeats: int = 3                # timed prefill passes
    warmup: int = 1                 # untimed passes before them
    prompt_len: int = 16            # generate: tokens of prompt before the T generated
    time_budget_s: float = 300.0    # past it (after loading) the point is a timeout
    memory_limit_bytes: int | None = None  # cap on what the point needs beyond the loaded model
    seed: int = 0                   # of the weights and the token ids
    chunk_size: int = 1024          # tokens per chunk of RWKV's parallel mode
    tokenizer: str | None = None    # for models without one of their own
    threads: int | None = None      # torch threads (None: torch's default)
    max_token_rows: int = MAX_TOKEN_ROWS  # tokens.csv rows per sequence (beyond: averages of positions)
    phases: list[str] | None = None  # scenarios measured in this child, in order (default: [scenario])
    decode_steps: int = 32          # timed decode steps at context T
    decode_ref_len: int = 0         # context of the reference state whose steps alternate with them (0: none)
    repeat_time_s: float = 20.0     # prefill passes stop repeating once the timed ones took this long
    wkv: str | None = None         # RWKV_BENCH_WKV for the child: kernel, or reference when the user allowed it
    check_lengths: list[int] | None = None  # generate: decode grid lengths <= T for the one-process Figure 7 check
    batch: int = 1                  # serve: sequences decoded together
    prefill_token_budget: int = 16384  # serve: B distinct prompts while B x T fits, else copies of one
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
