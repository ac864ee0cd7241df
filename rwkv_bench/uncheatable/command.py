"""`rwkv-bench uncheatable`: the CLI layer over `evaluate.run`."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UserError
from . import arxiv_source as src
from .evaluate import Options, run
from .texts import DEFAULT_CHARS, DEFAULT_MIN_CHARS


def split_models(text: str) -> list[str]:
    models = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if not models:
        raise UserError("--models needs at least one model spec, e.g. --models smollm2-135m,rwkv4-tiny")
    return models


def register(app: typer.Typer) -> None:
    @app.command("uncheatable")
    def uncheatable(
        models: str = typer.Option(..., "--models", "-m", help="Comma-separated model specs (presets, paths, hub ids)."),
        papers: int = typer.Option(None, "--papers", "-n",
                                   help="Number of papers (default 1000 from arXiv; every text of --papers-file)."),
        since: str = typer.Option(None, help="First submission date, YYYY-MM-DD (default: 14 days before today)."),
        until: str = typer.Option(None, help="Last submission date, YYYY-MM-DD (default: yesterday)."),
        categories: str = typer.Option(None, help="Comma-separated arXiv categories, e.g. cs.CL,cs.LG (default: all)."),
        papers_file: Path = typer.Option(None, "--papers-file",
                                         help="JSON/JSONL of your own texts (strings or objects with 'text')."),
        chars: int = typer.Option(DEFAULT_CHARS, help="Characters kept per text (the first ones)."),
        min_chars: int = typer.Option(DEFAULT_MIN_CHARS, help="Shorter texts are skipped (arXiv) or rejected (file)."),
        cache_dir: Path = typer.Option(None, help="arXiv cache directory (default: the user cache dir)."),
        offline: bool = typer.Option(False, "--offline", help="Use only cached arXiv papers; no network."),
        out: Path = typer.Option(None, help="Run directory (default results/uncheatable/<timestamp>)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (default: the latest run)."),
        stride: int = typer.Option(None, help="Sliding-window stride for transformers (default: half the context)."),
        device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
        dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
        tokenizer: str = typer.Option(None, help="Tokenizer for RWKV checkpoints without one."),
        delay: float = typer.Option(src.MIN_DELAY_S, help="Seconds between arXiv requests (at least 3)."),
        page_size: int = typer.Option(100, help="Results per arXiv API page."),
        retries: int = typer.Option(3, help="Retries of a failed arXiv request."),
        bootstrap: int = typer.Option(10_000, help="Bootstrap resamples for the intervals."),
        seed: int = typer.Option(0, help="Seed of the bootstrap."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
    ):
        """Score new texts (recent arXiv papers, or your own file) under several models, with intervals."""
        if delay < src.MIN_DELAY_S:
            raise UserError(f"--delay must be at least {src.MIN_DELAY_S:g} seconds (arXiv's API terms), got {delay:g}")
        options = Options(models=split_models(models), papers=papers, papers_file=papers_file, since=since,
                          until=until, categories=src.parse_categories(categories), chars=chars,
                          min_chars=min_chars, cache_dir=cache_dir, offline=offline, out=out, resume=resume,
                          stride=stride, device=device, dtype=dtype, tokenizer=tokenizer, delay=delay,
                          page_size=page_size, retries=retries, bootstrap=bootstrap, seed=seed, progress=progress)
        run_dir = run(options)
        summary = (run_dir / "summary.md").read_text()
        print(summary)
        print(f"results: {run_dir}")
