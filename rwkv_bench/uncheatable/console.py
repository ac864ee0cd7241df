"""What the uncheatable run says on stderr: one-line warnings and the one progress-bar helper."""
from __future__ import annotations


def console(enabled: bool = True):
    from rich.console import Console

    return Console(stderr=True, quiet=not enabled)


def warn(message: str) -> None:
    from rich.markup import escape

    # soft_wrap: one warning stays one line in a log file; escape: a "[...]" in the message is text, not markup
    console().print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def progress_bar(enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console(), disable=not enabled,
                    transient=False)
