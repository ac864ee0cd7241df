"""`rwkv-bench nlp`: the Typer layer over evaluate.run_nlp; flags and defaults from NlpConfig."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..options import typer_option
from .config import NlpConfig


def opt(name: str, *flags: str):
    return typer_option(NlpConfig, name, *flags)


def register(app: typer.Typer) -> None:
    @app.command("nlp")
    def nlp(
        models: Optional[str] = opt("models", "--models", "-m"),
        tasks: Optional[str] = opt("tasks", "--tasks", "-t"),
        limit: Optional[float] = opt("limit"),
        num_fewshot: Optional[int] = opt("num_fewshot"),
        batch_size: Optional[int] = opt("batch_size"),
        include_path: Optional[List[str]] = opt("include_path"),
        device: Optional[str] = opt("device"),
        dtype: Optional[str] = opt("dtype"),
        tokenizer: Optional[str] = opt("tokenizer"),
        bootstrap_iters: Optional[int] = opt("bootstrap_iters"),
        log_samples: bool = typer.Option(False, "--log-samples", help="Also write lm-eval's per-request records."),
        out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default results/nlp/<timestamp>)."),
        resume: bool = typer.Option(False, "--resume", help=(
            "Continue a run (--out DIR, else the latest): (model, task) pairs already finished are kept.")),
    ):
        """The paper's NLP benchmarks through lm-evaluation-harness, RWKV-4 with state reuse."""
        from .evaluate import run_nlp

        given = {k: v for k, v in locals().items() if k in NlpConfig.__dataclass_fields__}
        given["log_samples"] = log_samples or None
        given["include_path"] = include_path or None
        run_dir = run_nlp(given, out=out, resume=resume)
        print((run_dir / "table.md").read_text(encoding="utf-8"))
        print(f"results in {run_dir}")
