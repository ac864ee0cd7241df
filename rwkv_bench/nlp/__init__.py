"""`rwkv-bench nlp`: the paper's NLP benchmarks through lm-evaluation-harness, with RWKV state reuse.

Importing this package registers our RWKV-4 with lm-eval as the model "rwkv-bench" (lazily: lm-eval and
torch are only imported when lm-eval asks for the model), so that

    python -m rwkv_bench.nlp.lm_eval_cli --model rwkv-bench --model_args pretrained=rwkv4-169m --tasks ...

runs lm-eval's own CLI with it. See lm.py (the model), tasks.py (task names, paper metrics, offline
checks), evaluate.py (the `rwkv-bench nlp` run), report.py (tables and figures).
"""
from __future__ import annotations

MODEL_NAME = "rwkv-bench"
MODEL_TARGET = "rwkv_bench.nlp.lm:RWKVBenchLM"


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
