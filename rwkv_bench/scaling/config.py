"""The scaling sweep's options: defaults and help text in one place (CLI flags, meta.json, resume), each one
parsed and checked once, when the config is built, into the typed fields the sweep uses."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from ..options import (ModelOptions, canonical_dtype, merge_options, option, parse_device, parse_size, parsed,
                       positive)
from ..specs import ModelSpec, parse_models
from .points import geometric_grid, parse_scenarios


@dataclass
class ScalingConfig(ModelOptions):
    # The offline default: a matched small pair plus transformers' own RWKV on our weights, short lengths,
    # so that `rwkv-bench scaling` with no flags takes about five minutes on a 2-core CPU.
    models: str = option("rwkv4-tiny,rwkv7-tiny,gptneox-tiny,transformers:rwkv4-tiny", (
        "Comma-separated model specs. transformers:rwkv4-<size> runs transformers' own RwkvForCausalLM on the "
        "same random weights as rwkv4-<size>."), fixed=True, flags=("--models", "-m"))
    scenario: str = option("prefill,decode,generate", (
        "prefill (one forward pass over T tokens), decode (the cost of one generated token at context T: prefill "
        "to T, then timed steps), generate (T tokens decoded one by one, the direct Figure 7), serve (B sequences "
        "at context T decoded together, each with its own state or KV cache: --batch-sizes, --serve-lengths); "
        "comma-separated."), flags=("--scenario", "-s"))
    min_len: int = option(16, "Shortest T.")
    max_len: int = option(2048, "Longest T, included.")
    points: int | None = option(None, "Number of lengths in the geometric grid (instead of --ratio).")
    ratio: float | None = option(None, "Step of the geometric grid (2 when neither --points nor --ratio is given).")
    gen_max_len: int | None = option(1024, (
        "Longest T for generate, tokens decoded one by one (longer grid lengths are prefill and decode only; "
        "Figure 7 beyond it is integrated from the decode samples)."))
    decode_steps: int = option(32, "Timed decode steps at each context T (median and spread; the mean is what "
                                   "Figure 7 integrates).")
    decode_ref_len: int = option(1000, (
        "Context of a reference state whose decode steps alternate with those at T in the same process, so "
        "machine drift hits both alike (0: none)."))
    repeat_time: float = option(20.0, (
        "Prefill passes (and no-cache decode steps, each a forward over T+1 tokens) stop repeating once the "
        "timed ones took this many seconds; at least one always runs."))
    kv_cache: bool = option(True, (
        "Transformers decode with their KV cache, or (--no-kv-cache) re-run the whole sequence per token "
        "(the paper's protocol)."), fixed=True, flags=("--kv-cache/--no-kv-cache",))
    time_budget: float = option(300.0, (
        "Seconds per point after loading; past it the point is a timeout and longer lengths of that model "
        "and scenario are skipped."))
    memory_limit: str | None = option(None, (
        "Cap on what a point may need beyond the loaded model, e.g. 2G (CPU: its live memory, sampled RSS with "
        "freed heap returned to the OS after every step; CUDA: per-process memory fraction). Exceeding it "
        "records oom; a transformer point whose predicted KV cache and activations exceed it (or the free "
        "memory) is skipped without running, as is a serve point whose B states or KV caches would. serve: also "
        "the budget of the capacity table (default: the memory free when the sweep starts)."))
    batch_sizes: str = option("1,4,16,64", (
        "serve: the batch sizes B, comma-separated; recurrent models (RWKV, Mamba) go on by x4 to "
        "--recurrent-max-batch."))
    recurrent_max_batch: int = option(1024, "serve: the largest B of a recurrent model's grid (0: --batch-sizes only).")
    serve_lengths: str | None = option(None, "serve: the contexts T, comma-separated (default: the length grid).")
    prefill_token_budget: int = option(16384, (
        "serve: B different prompts are prefilled while B x T stays within this many tokens (aggregate prefill "
        "tokens/s); beyond it the rows are real copies of one prefilled state or KV cache."))
    confirm_max_batch: int = option(4096, (
        "serve: the capacity at each T (the largest B whose states fit the memory budget, predicted from the "
        "measured bytes per sequence) is run to confirm it when it is at most this B (0: never)."))
    repeats: int = option(3, "Timed prefill passes.")
    warmup: int = option(1, "Untimed warm-up passes.")
    prompt_len: int = option(16, "Prompt before generation.", fixed=True)
    threads: int | None = option(None, "torch threads in each child (default: torch's).")
    seed: int = option(0, "Seed of the weights and the token ids.", fixed=True)
    chunk_size: int = option(1024, "Tokens per chunk of RWKV's parallel mode.", fixed=True)
    allow_reference: bool = option(False, (
        "Let our RWKV models run the PyTorch reference WKV when the compiled kernel cannot be had (without "
        "it the sweep stops before measuring anything)."), flags=("--allow-reference",))

    # parsed from the options above by __post_init__
    specs: list[ModelSpec] = parsed()
    scenarios: list[str] = parsed()
    lengths: dict[str, list[int]] = parsed()        # scenario -> its grid of T
    memory_limit_bytes: int | None = parsed()
    batches: list[int] = parsed()                   # serve: --batch-sizes as integers

    def __post_init__(self):
        self.specs = parse_models(self.models)
        self.scenarios = parse_scenarios(str(self.scenario))
        for name in ("min_len", "max_len", "repeats", "prompt_len", "time_budget", "chunk_size", "decode_steps"):
            positive(getattr(self, name), f"--{name.replace('_', '-')}")
        for name in ("warmup", "decode_ref_len", "repeat_time"):
            positive(getattr(self, name), f"--{name.replace('_', '-')}", zero_ok=True)
        positive(self.threads, "--threads")
        positive(self.points, "--points")
        if self.ratio is not None and not self.ratio > 1:
            raise UserError(f"--ratio must be greater than 1, got {self.ratio:g}")
        if self.points is not None and self.ratio is not None:
            raise UserError("give --points or --ratio, not both")
        if self.min_len > self.max_len:
            raise UserError(f"--min-len {self.min_len} is larger than --max-len {self.max_len}")
        grid = geometric_grid(self.min_len, self.max_len, self.points, self.ratio)
        gen_max = positive(self.gen_max_len if self.gen_max_len is not None else self.max_len, "--gen-max-len")
        gen_grid = [t for t in grid if t <= gen_max]
        if "generate" in self.scenarios and not gen_grid:
            raise UserError(f"--gen-max-len {gen_max} is below --min-len {self.min_len}: no generate lengths")
        self.batches = int_list(self.batch_sizes, "--batch-sizes")
        serve_grid = int_list(self.serve_lengths, "--serve-lengths") if self.serve_lengths else grid
        for name in ("prefill_token_budget",):
            positive(getattr(self, name), f"--{name.replace('_', '-')}")
        for name in ("recurrent_max_batch", "confirm_max_batch"):
            positive(getattr(self, name), f"--{name.replace('_', '-')}", zero_ok=True)
        self.lengths = {"prefill": grid, "decode": grid, "generate": gen_grid, "serve": serve_grid}
        self.memory_limit_bytes = parse_size(self.memory_limit)
        self.device = parse_device(self.device)
        self.dtype = canonical_dtype(self.dtype)

    @property
    def model_names(self) -> list[str]:
        return [spec.text for spec in self.specs]

    def batch_grid(self, recurrent: bool) -> list[int]:
        """serve: the batch sizes of a model; a recurrent one's go on by x4 up to --recurrent-max-batch."""
        grid = list(self.batches)
        while recurrent and grid[-1] * 4 <= self.recurrent_max_batch:
            grid.append(grid[-1] * 4)
        return grid


def int_list(text, flag: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16] (sorted, no duplicates); anything else is one line naming the flag."""
    parts = [p.strip() for p in str(text).split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"{flag} takes a comma-separated list of positive integers, got {text!r}")
    return sorted({int(p) for p in parts})


def resolve(given: dict, stored: dict | None = None) -> ScalingConfig:
    """The config of a run: defaults, then a resumed run's stored options, then the flags given now. The grid
    is set by --points or --ratio: one given now replaces the other stored."""
    stored = dict(stored or {})
    if given.get("points") is not None:
        stored.pop("ratio", None)
    if given.get("ratio") is not None:
        stored.pop("points", None)
    return merge_options(ScalingConfig, given, stored)
