"""What every command says on stderr, in one style: the console, one-line warnings, and the one progress bar
(rich; lm-eval's own loops keep lm-eval's tqdm bars, so `disable_tqdm` means what lm-eval means by it)."""
from __future__ import annotations


def stderr_console(enabled: bool = True):
    from rich.console import Console

    return Console(stderr=True, highlight=False, quiet=not enabled)


def warn(message: str) -> None:
    from rich.markup import escape

    # soft_wrap: one warning stays one line in a log file; escape: a "[...]" in the message is text, not markup
    stderr_console().print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)


def progress_bar(enabled: bool = True, *, console=None, transient: bool = False, unit: str | None = None):
    """A bar with its description, done/total, elapsed time and ETA. `unit`: the bar's total is not what the
    user counts (scaling's total is estimated seconds), so show the task's `done` field and `unit` instead."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    count = MofNCompleteColumn() if unit is None else TextColumn(f"{{task.fields[done]}} {unit}")
    return Progress(SpinnerColumn(), TextColumn("{task.description:<44}"), BarColumn(), count, TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console or stderr_console(),
                    disable=not enabled, transient=transient)
