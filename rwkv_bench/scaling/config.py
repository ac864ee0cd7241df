"""The scaling sweep's options: defaults and help text in one place (CLI flags, meta.json, resume)."""
from __future__ import annotations

from dataclasses import dataclass

from ..options import ModelOptions, option


@dataclass
class ScalingConfig(ModelOptions):
    # The offline default: a matched small pair plus transformers' own RWKV on our weights, short lengths,
    # so that `rwkv-bench scaling` with no flags takes about five minutes on a 2-core CPU.
    models: str = option("rwkv4-tiny,gptneox-tiny,transformers:rwkv4-tiny", (
        "Comma-separated model specs. transformers:rwkv4-<size> runs transformers' own RwkvForCausalLM on the "
        "same random weights as rwkv4-<size>."), fixed=True, flags=("--models", "-m"))
    scenario: str = option("prefill,decode,generate", (
        "prefill (one forward pass over T tokens), decode (the cost of one generated token at context T: prefill "
        "to T, then timed steps), generate (T tokens decoded one by one, the direct Figure 7); comma-separated."),
        flags=("--scenario", "-s"))
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
        "memory) is skipped without running."))
    repeats: int = option(3, "Timed prefill passes.")
    warmup: int = option(1, "Untimed warm-up passes.")
    prompt_len: int = option(16, "Prompt before generation.", fixed=True)
    threads: int | None = option(None, "torch threads in each child (default: torch's).")
    seed: int = option(0, "Seed of the weights and the token ids.", fixed=True)
    chunk_size: int = option(1024, "Tokens per chunk of RWKV's parallel mode.", fixed=True)
