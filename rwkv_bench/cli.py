"""The command line: a thin Typer layer over plain functions.

Each scenario registers its command from `rwkv_bench/<scenario>/command.py` (a `register(app)` function),
so this file only wires them and turns every error a user can cause into one line on stderr and exit
code 2: bad input (UserError) and usage errors (unknown option, missing or ill-typed value, bad choice).
Set RWKV_BENCH_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import typer

from .errors import UserError
from .runlock import release_all

app = typer.Typer(
    name="rwkv-bench",
    help="RWKV-4 and RWKV-7 against transformer and Mamba baselines: scaling, serving, uncheatable eval, NLP tasks, kernels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from . import commands  # noqa: E402
from .nlp import command as nlp_command  # noqa: E402
from .report import command as report_command  # noqa: E402
from .scaling import command as scaling_command  # noqa: E402
from .uncheatable import command as uncheatable_command  # noqa: E402

for module in (commands, scaling_command, uncheatable_command, nlp_command, report_command):
    module.register(app)


def usage_message(exc: BaseException) -> str | None:
    """The one-line message of a click usage error (click's or the copy typer vendors: both have
    `format_message` and `exit_code`), or None for any other exception."""
    if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
        return None
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None else ""
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return f"{where}{' '.join(exc.format_message().split())}{hint}"


def out_of_space_message(exc: OSError) -> str:
    """A full disk: which file, that what was measured is kept, and how to finish once there is space."""
    if not exc.filename:
        return f"{exc.strerror}: rows written so far are kept; free some space, then rerun with --resume"
    path = Path(exc.filename)
    run_dir = next((p for p in path.parents if (p / "meta.json").is_file()), None)
    if run_dir is None:
        return f"{exc.strerror}: could not write {path}"
    return (f"{exc.strerror}: could not write {path}; the rows measured so far are kept in {run_dir}/. "
            f"Once there is space: `rwkv-bench report {run_dir}` rebuilds its tables and figures, "
            f"`--resume --out {run_dir}` measures what is missing")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; errors a user can cause become one line on stderr and exit code 2."""
    try:
        return run_app(argv)
    finally:
        release_all()  # a run that stopped on an error hands its directory on (in-process callers too)
        if "torch.distributed" in sys.modules:  # under torchrun: leave the process group cleanly, error or not
            from .distributed import shutdown

            shutdown()


def run_app(argv: list[str] | None) -> int:
    debug = bool(os.environ.get("RWKV_BENCH_DEBUG"))
    try:
        result = app(args=argv, standalone_mode=False, prog_name="rwkv-bench")
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rows written so far are kept; rerun with --resume to continue", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) and not debug:
            print(f"error: {out_of_space_message(exc)}", file=sys.stderr)
            return 1
        message = usage_message(exc)
        if debug or message is None and os.environ.get("RWKV_BENCH_TRACEBACK"):
            raise
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
            return 2
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"error: internal error: {type(exc).__name__}: {first} (RWKV_BENCH_DEBUG=1 shows the traceback; "
              "please report it)", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())
