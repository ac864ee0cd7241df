"""lm-eval's own command line, with rwkv-bench's lm-eval model registered as `--model rwkv-bench`.

    python -m rwkv_bench.nlp.lm_eval_cli --model rwkv-bench --model_args pretrained=rwkv4-169m \\
        --tasks rwkv_bench_mc --include_path tasks --limit 20

Every argument is lm-eval's (`lm-eval run --help`); this only imports rwkv_bench.nlp first (and provides
the SQuAD metrics module lm-eval's ReCoRD task still imports from transformers, see squad_compat.py).
"""
from __future__ import annotations

import rwkv_bench.nlp  # noqa: F401  (registers the "rwkv-bench" model)


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    from .squad_compat import install

    install()  # lm-eval's record task imports transformers.data.metrics.squad_metrics (gone in transformers 5)
    cli_evaluate()


if __name__ == "__main__":
    main()
