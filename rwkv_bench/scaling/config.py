"""The scaling sweep's options: defaults and help text in one place (CLI flags, meta.json, resume)."""
from __future__ import annotations

from dataclasses import dataclass

from ..options import option


@dataclass
class ScalingConfig:
    # The offline default: a matched small pair plus transformers' own RWKV on our weights, short lengths,
    # so that `rwkv-bench scaling` with no flags takes about five minutes on a 2-core CPU.
    models: str = option("rwkv4-tiny,gptneox-tiny,transformers:rwkv4-tiny", (
        "Comma-separated model specs. transformers:rwkv4-<size> runs transformers' own RwkvForCausalLM on the "
        "same random weights as rwkv4-<size>."), fixed=True, flags=("--models", "-m"))
    scenario: str = option("prefill,generate", "prefill, generate or both.", flags=("--scenario", "-s"))
    min_len: int = option(16, "Shortest T.")
    max_len: int = option(2048, "Longest T, included.")
    points: int | None = option(None, "Number of lengths in the geometric grid (instead of --ratio).")
    ratio: float | None = option(None, "Step of the geometric grid (2 when neither --points nor --ratio is given).")
    gen_max_len: int | None = option(1024, (
        "Longest T for generate (longer grid lengths are prefill only); with --min-len or --max-len given and "
        "no --gen-max-len: --max-len."))
    kv_cache: bool = option(True, (
        "Transformers decode with their KV cache, or (--no-kv-cache) re-run the whole sequence per token "
        "(the paper's protocol)."), fixed=True, flags=("--kv-cache/--no-kv-cache",))
    device: str = option("cpu", "cpu or cuda[:N].", fixed=True)
    dtype: str = option("float32", "float32, bfloat16 or float16.", fixed=True)
    time_budget: float = option(300.0, (
        "Seconds per point after loading; past it the point is a timeout and longer lengths of that model "
        "and scenario are skipped."))
    memory_limit: str | None = option(None, (
        "Cap on what a point may allocate beyond the loaded model, e.g. 2G (CPU: RLIMIT_AS of the child; "
        "CUDA: per-process memory fraction). Exceeding it records oom."))
    repeats: int = option(3, "Timed prefill passes.")
    warmup: int = option(1, "Untimed warm-up passes.")
    prompt_len: int = option(16, "Prompt before generation.", fixed=True)
    threads: int | None = option(None, "torch threads in each child (default: torch's).")
    seed: int = option(0, "Seed of the weights and the token ids.", fixed=True)
    tokenizer: str | None = option(None, "Tokenizer for models without one of their own (default: GPT-NeoX-20B, "
                                         "shipped).", fixed=True)
    chunk_size: int = option(1024, "Tokens per chunk of RWKV's parallel mode.", fixed=True)
