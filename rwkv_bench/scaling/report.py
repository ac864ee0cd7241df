"""`render(run_dir)`: the scaling run's figures, table1.md and summary.md, from its stored files only (never
runs a model): store.py reads them, figures.py draws, table1.py fits, summary.py writes the text."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .facts import model_facts
from .figures import draw_all
from .store import POINTS_CSV, load_run
from .summary import render_summary
from .table1 import render_table1


def render(run_dir: Path) -> list[Path]:
    """Rebuild every table and figure of a scaling run from its stored CSVs and meta.json."""
    run_dir = Path(run_dir)
    points, tokens, meta = load_run(run_dir)
    if points.empty:
        raise UserError(f"{run_dir / POINTS_CSV} has no rows: nothing to report")
    written = draw_all(points, tokens, meta, model_facts(points), run_dir)
    figures = [p.stem for p in written if p.suffix == ".png"]
    table1 = run_dir / "table1.md"
    table1.write_text(render_table1(points, meta))
    summary = run_dir / "summary.md"
    summary.write_text(render_summary(points, tokens, meta, figures))
    return [table1, summary, *written]
