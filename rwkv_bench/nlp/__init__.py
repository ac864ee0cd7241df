"""`rwkv-bench nlp`: the paper's NLP benchmarks through lm-evaluation-harness, with RWKV state reuse.

Importing this package registers our lm-eval model (any of rwkv-bench's recurrent models, RWKV-4 or RWKV-7,
with state reuse) as "rwkv-bench" (lazily: lm-eval and torch are only imported when lm-eval asks for the
model), so that

    python -m rwkv_bench.nlp.lm_eval_cli --model rwkv-bench --model_args pretrained=rwkv4-169m --tasks ...

runs lm-eval's own CLI with it. The modules:
    config.py             the options, parsed and checked once
    evaluate.py           the `rwkv-bench nlp` run: which lm-eval model runs each spec, one task at a time
    store.py              the run directory's files: names, columns, readers and writers
    report.py             tables and figures, from the store
    tasks.py              task names, the paper's metrics, our local tasks, offline checks
    lm_eval_model.py      our lm-eval model over any RecurrentLM
    shared_prefix.py      scoring loglikelihood requests with shared contexts and prefixes run once
    prefix_batches.py     prefix trees and right-padded batches of token lists (no model)
    meter.py              counting tokens, passes and time, also on lm-eval's own hf model
    squad_compat.py       the SQuAD metrics module lm-eval's ReCoRD imports from transformers (gone in 5.x)
    lm_eval_cli.py        lm-eval's own CLI with our model registered
"""
from __future__ import annotations

MODEL_NAME = "rwkv-bench"
MODEL_TARGET = "rwkv_bench.nlp.lm_eval_model:RWKVBenchLM"


def register_lm_eval_model() -> None:
    """Register "rwkv-bench" in lm-eval's model registry (idempotent).

    lm-eval fills its registry with its own models only when the registry is empty on first lookup, so
    its models are registered first here; otherwise `--model hf` would stop resolving.
    """
    try:
        import lm_eval.models  # noqa: F401  (registers hf, vllm, ... as lazy placeholders)
        from lm_eval.api.registry import model_registry
    except ImportError:  # lm-eval not installed: nothing to register with
        return
    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


register_lm_eval_model()
