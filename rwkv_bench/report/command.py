"""`rwkv-bench report [RUN_DIR ...]`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import UserError


def report_runs(run_dirs: list[Path] | None, results_root: Path = Path("results")) -> list[Path]:
    """The plain function behind `rwkv-bench report`: returns the index.md files written.
    Every run is attempted; failures are printed one line each, and the first one is raised at the end."""
    from ..runlock import refuse_if_held
    from .build import find_run_dirs, render_run

    runs = list(run_dirs) if run_dirs else find_run_dirs(results_root)
    if not runs:
        raise UserError(f"no run directories (with meta.json) under {results_root}/; pass RUN_DIR")
    indexes, errors = [], []
    for run_dir in runs:
        try:
            refuse_if_held(Path(run_dir))
            written = render_run(Path(run_dir))
        except UserError as exc:
            errors.append(exc)
            if len(runs) > 1:
                print(f"error: {exc}", file=sys.stderr)
            continue
        indexes.append(written[-1])
        print(f"{run_dir}: {len(written)} files, index {written[-1]}")
    if errors:
        if len(runs) == 1:
            raise errors[0]
        raise UserError(f"{len(errors)} of {len(runs)} run directories could not be reported (see above)")
    return indexes


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        run_dirs: Optional[List[Path]] = typer.Argument(None, help="Run directories (default: every run under results/ except results/reference/)."),
    ):
        """Rebuild every table and figure of runs from their stored files, and an index.md per run."""
        report_runs(run_dirs)
