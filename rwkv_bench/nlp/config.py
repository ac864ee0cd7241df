"""`rwkv-bench nlp` options: defaults and help text in one place (CLI flags, meta.json, resume)."""
from __future__ import annotations

from dataclasses import dataclass

from ..options import ModelOptions, option


@dataclass
class NlpConfig(ModelOptions):
    # the paper's smallest pair, as in the uncheatable eval; offline: --models rwkv4-tiny,smollm2-135m
    models: str | list[str] = option("RWKV/rwkv-4-169m-pile,EleutherAI/pythia-160m", (
        "Comma-separated model specs: RWKV-4 ones run in rwkv-bench's lm-eval model with state reuse, others in "
        "lm-eval's hf model (transformers:SPEC forces hf)."), fixed=True, flags=("--models", "-m"))
    tasks: str = option("paper", (
        "Comma-separated lm-eval task/group/tag names; 'paper' = the paper's twelve (their datasets download "
        "once); rwkv_bench_local = our offline tasks in tasks/."), flags=("--tasks", "-t"))
    limit: float | None = option(None, "Examples per task (or a fraction below 1); for quick runs.")
    num_fewshot: int = option(0, "Few-shot examples per prompt (paper: 0).", fixed=True)
    batch_size: int = option(8, "hf: requests per forward; rwkv-bench: continuations per forward.")
    include_path: list[str] = option([], "Extra folder(s) of lm-eval task YAMLs (tasks/ is always included).")
    bootstrap_iters: int = option(100000, "lm-eval's bootstrap draws for perplexity-type standard errors.")
    log_samples: bool = option(False, "Also write lm-eval's per-request records.",
                               flags=("--log-samples/--no-log-samples",))
