"""`rwkv-bench uncheatable`: the Typer layer over `evaluate.run`; its flags are UncheatableConfig's fields."""
from __future__ import annotations

import typer

from ..options import cli_flag, register_config_command, run_dir_flags
from .config import UncheatableConfig


def uncheatable(given: dict, *, out, resume: bool, progress: bool) -> None:
    from ..distributed import from_env
    from .evaluate import run

    run_dir = run({**given, "progress": progress}, out=out, resume=resume)
    if from_env().is_main:  # under torchrun every rank runs this; rank 0 speaks for the run
        print((run_dir / "summary.md").read_text())
        print(f"results: {run_dir}")


def register(app: typer.Typer) -> None:
    progress = cli_flag("progress", bool, typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."))
    register_config_command(app, "uncheatable", UncheatableConfig, uncheatable,
                            extra=[*run_dir_flags("uncheatable"), progress],
                            doc="Score new texts (recent arXiv papers, or your own file) under several models, "
                                "with intervals.")
