"""The command line: a thin Typer layer over plain functions.

Each scenario registers its own command(s) from `rwkv_bench/<scenario>/command.py` (a `register(app)`
function), so this file only wires them and maps known errors to one line and exit code 2.
Set RWKV_BENCH_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import os
import sys

import typer

from .errors import UserError

app = typer.Typer(
    name="rwkv-bench",
    help="RWKV-4 against transformer baselines: scaling, uncheatable eval, NLP tasks, kernels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    from .commands import register as register_core

    register_core(app)
    for module in ("scaling", "uncheatable", "nlp", "report"):
        try:
            mod = __import__(f"rwkv_bench.{module}.command", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(f"rwkv_bench.{module}"):
                continue  # scenario not present in this checkout
            raise
        mod.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; known errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except UserError as exc:
        if os.environ.get("RWKV_BENCH_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rows written so far are kept; rerun with --resume to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # click's own usage errors and aborts
        import click

        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        if isinstance(exc, click.ClickException):
            if os.environ.get("RWKV_BENCH_DEBUG"):
                raise
            print(f"error: {exc.format_message()}", file=sys.stderr)
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            print("aborted", file=sys.stderr)
            return 130
        raise
    return 0


def entry() -> None:
    sys.exit(main())
