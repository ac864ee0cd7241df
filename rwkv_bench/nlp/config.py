"""`rwkv-bench nlp` options: defaults and help text in one place (CLI flags, meta.json, resume), each one
parsed and checked once, when the config is built, into the typed fields the run uses."""
from __future__ import annotations

from dataclasses import dataclass

from ..models.presets import PILE_TRIO
from ..options import (ModelOptions, canonical_dtype, merge_options, option, parse_device, parse_number, parsed,
                       positive)
from ..specs import ModelSpec, parse_models
from .tasks import expand_task_names


@dataclass
class NlpConfig(ModelOptions):
    # the Pile trio, as in the uncheatable eval; offline: --models rwkv4-tiny,rwkv7-tiny,smollm2-135m
    models: str | list[str] = option(PILE_TRIO, (
        "Comma-separated model specs: rwkv-bench's own recurrent models (RWKV) run in its lm-eval model with "
        "state reuse, others in lm-eval's hf model (transformers:SPEC forces hf)."),
        fixed=True, flags=("--models", "-m"))
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

    # parsed from the options above by __post_init__
    specs: list[ModelSpec] = parsed()
    task_names: list[str] = parsed()     # as given, 'paper' expanded (tags are expanded once tasks are indexed)

    def __post_init__(self):
        positive(self.batch_size, "--batch-size")
        positive(self.num_fewshot, "--num-fewshot", zero_ok=True)
        positive(self.bootstrap_iters, "--bootstrap-iters", zero_ok=True)
        self.device = parse_device(self.device)
        self.dtype = canonical_dtype(self.dtype)
        self.limit = parse_limit(self.limit)
        self.task_names = expand_task_names(self.tasks)
        self.specs = parse_models(self.models)


def parse_limit(limit) -> int | float | None:
    """--limit: a count of examples per task, or a fraction (below 1) of each task."""
    if limit is None:
        return None
    value = positive(parse_number(limit, "--limit"), "--limit")
    return int(value) if value >= 1 else value


def resolve(given: dict, stored: dict | None = None) -> NlpConfig:
    """The config of a run: defaults, then a resumed run's stored options, then the flags given now."""
    return merge_options(NlpConfig, given, stored)
