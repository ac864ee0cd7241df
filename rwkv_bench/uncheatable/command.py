"""`rwkv-bench uncheatable`: the Typer layer over `evaluate.run`; flags and defaults from UncheatableConfig."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..options import typer_option
from .config import UncheatableConfig


def opt(name: str, *flags: str):
    return typer_option(UncheatableConfig, name, *flags)


def register(app: typer.Typer) -> None:
    @app.command("uncheatable")
    def uncheatable(
        models: Optional[str] = opt("models", "--models", "-m"),
        papers: Optional[int] = opt("papers", "--papers", "-n"),
        since: Optional[str] = opt("since"),
        until: Optional[str] = opt("until"),
        categories: Optional[str] = opt("categories"),
        papers_file: Optional[Path] = opt("papers_file"),
        chars: Optional[int] = opt("chars"),
        min_chars: Optional[int] = opt("min_chars"),
        cache_dir: Optional[Path] = opt("cache_dir"),
        offline: bool = typer.Option(False, "--offline", help="Use only cached arXiv papers; no network."),
        stride: Optional[int] = opt("stride"),
        device: Optional[str] = opt("device"),
        dtype: Optional[str] = opt("dtype"),
        tokenizer: Optional[str] = opt("tokenizer"),
        delay: Optional[float] = opt("delay"),
        page_size: Optional[int] = opt("page_size"),
        retries: Optional[int] = opt("retries"),
        bootstrap: Optional[int] = opt("bootstrap"),
        seed: Optional[int] = opt("seed"),
        out: Optional[Path] = typer.Option(None, help="Run directory (default results/uncheatable/<timestamp>)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (default: the latest run)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
    ):
        """Score new texts (recent arXiv papers, or your own file) under several models, with intervals."""
        from .evaluate import run

        given = {k: v for k, v in locals().items() if k in UncheatableConfig.__dataclass_fields__}
        given["offline"] = offline or None
        run_dir = run(given, out=out, resume=resume)
        print((run_dir / "summary.md").read_text())
        print(f"results: {run_dir}")
