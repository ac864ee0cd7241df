"""`render(run_dir)`: the scaling run's figures, table1.md and summary.md, from its stored files only (never
runs a model): store.py reads them, figures.py draws, table1.py fits, summary.py writes the text,
serving_report.py the serve scenario's tables and figures."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .facts import model_facts
from .figures import draw_all
from .serving_report import render_serving
from .store import POINTS_CSV, load_run, read_serving
from .summary import render_summary
from .table1 import render_table1


def render(run_dir: Path) -> list[Path]:
    """Rebuild every table and figure of a scaling run from its stored CSVs and meta.json."""
    run_dir = Path(run_dir)
    points, tokens, meta = load_run(run_dir)
    serving = read_serving(run_dir)
    if points.empty and serving.empty:
        raise UserError(f"{run_dir / POINTS_CSV} has no rows: nothing to report")
    written = draw_all(points, tokens, meta, model_facts(points), run_dir) if not points.empty else []
    served = render_serving(serving, points, meta, run_dir)
    figures = [p.stem for p in [*written, *served] if p.suffix == ".png"]
    table1 = run_dir / "table1.md"
    table1.write_text(render_table1(points, meta) if not points.empty else "# Table 1\n\nNo prefill, decode or "
                      "generate points in this run.\n")
    summary = run_dir / "summary.md"
    summary.write_text(render_summary(points, tokens, meta, figures, serving))
    return [table1, summary, *written, *served]
