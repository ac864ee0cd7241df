"""`rwkv-bench nlp`: the Typer layer over evaluate.run_nlp; its flags are NlpConfig's fields."""
from __future__ import annotations

import typer

from ..options import register_config_command, run_dir_flags
from .config import NlpConfig


def nlp(given: dict, *, out, resume: bool) -> None:
    from .evaluate import run_nlp

    from ..distributed import from_env

    run_dir = run_nlp(given, out=out, resume=resume)
    if from_env().is_main:  # under torchrun rank 0 alone wrote the tables and reports them
        print((run_dir / "table.md").read_text(encoding="utf-8"))
        print(f"results in {run_dir}")


def register(app: typer.Typer) -> None:
    register_config_command(app, "nlp", NlpConfig, nlp, extra=run_dir_flags("nlp"),
                            doc="The paper's NLP benchmarks through lm-evaluation-harness, our RWKV with state reuse.")
