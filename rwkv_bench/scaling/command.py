"""`rwkv-bench scaling`: the Typer layer over `sweep.run_sweep`; its flags are ScalingConfig's fields."""
from __future__ import annotations

import typer

from ..options import cli_flag, register_config_command, run_dir_flags
from .config import ScalingConfig


def scaling(given: dict, *, out, resume: bool, no_report: bool) -> None:
    from .sweep import run_sweep

    # generation one token at a time stays short (--gen-max-len, default 1024) whatever --max-len is: beyond
    # it Figure 7 is integrated from the decode samples, which cost no more than the prefill
    run_dir = run_sweep(given, out=out, resume=resume, report=not no_report)
    typer.echo(f"results: {run_dir}")


def register(app: typer.Typer) -> None:
    no_report = cli_flag("no_report", bool, typer.Option(False, "--no-report", help="Skip the figures and tables."))
    register_config_command(app, "scaling", ScalingConfig, scaling, extra=[*run_dir_flags("scaling"), no_report],
                            doc="Time and peak memory against sequence length, prefill and generation, RWKV vs "
                                "transformers.")
