"""`rwkv-bench scaling`: the Typer layer over `sweep.run_sweep`; flags and defaults come from ScalingConfig."""
from __future__ import annotations

from typing import Optional

import typer

from ..options import typer_option
from .config import ScalingConfig


def opt(name: str, *flags: str):
    return typer_option(ScalingConfig, name, *flags)


def register(app: typer.Typer) -> None:
    @app.command("scaling")
    def scaling(
        models: Optional[str] = opt("models", "--models", "-m"),
        scenario: Optional[str] = opt("scenario", "--scenario", "-s"),
        min_len: Optional[int] = opt("min_len"),
        max_len: Optional[int] = opt("max_len"),
        points: Optional[int] = opt("points"),
        ratio: Optional[float] = opt("ratio"),
        gen_max_len: Optional[int] = opt("gen_max_len"),
        kv_cache: Optional[bool] = opt("kv_cache", "--kv-cache/--no-kv-cache"),
        device: Optional[str] = opt("device"),
        dtype: Optional[str] = opt("dtype"),
        time_budget: Optional[float] = opt("time_budget"),
        memory_limit: Optional[str] = opt("memory_limit"),
        repeats: Optional[int] = opt("repeats"),
        warmup: Optional[int] = opt("warmup"),
        prompt_len: Optional[int] = opt("prompt_len"),
        threads: Optional[int] = opt("threads"),
        seed: Optional[int] = opt("seed"),
        tokenizer: Optional[str] = opt("tokenizer"),
        chunk_size: Optional[int] = opt("chunk_size"),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory (default: results/scaling/<UTC timestamp>)."),
        resume: bool = typer.Option(False, "--resume", help=(
            "Continue a run (--out DIR, else the latest under results/scaling): points already in points.csv "
            "are skipped; its stored options apply unless given again.")),
        no_report: bool = typer.Option(False, "--no-report", help="Skip the figures and tables at the end."),
    ):
        """Time and peak memory against sequence length, prefill and generation, RWKV vs transformers."""
        from .sweep import run_sweep

        if (max_len is not None or min_len is not None) and gen_max_len is None and not resume:
            gen_max_len = max_len or ScalingConfig.max_len  # lengths given: generate them all
        given = {k: v for k, v in locals().items() if k in ScalingConfig.__dataclass_fields__}
        run_dir = run_sweep(given, out=out, resume=resume, report=not no_report)
        typer.echo(f"results: {run_dir}")
