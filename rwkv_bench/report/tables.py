"""Numbers and Markdown tables for every report: one formatter, tables from `DataFrame.to_markdown`."""
from __future__ import annotations

import math

import pandas as pd

MISSING = "–"


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def fmt(value, spec: str = ".4g", scale: float = 1.0) -> str:
    """`value * scale` formatted with `spec`, or "–" for None / NaN."""
    return MISSING if is_missing(value) else format(value * scale, spec)


def pct_change(new, old) -> str:
    """new relative to old as a signed percentage ("+8.3%"), or "–" when either is missing or old is 0."""
    if is_missing(new) or is_missing(old) or not old:
        return MISSING
    return f"{100 * (new / old - 1):+.1f}%"


def markdown_table(rows, right: tuple[str, ...] = ()) -> str:
    """A Markdown (pipe) table from a DataFrame or a list of dicts whose cells are already text, through
    `DataFrame.to_markdown`; the columns named in `right` are right-aligned. Cells are printed as given (no
    number parsing, "|" becomes "/"), without the padding that lines up columns (long cells would widen every
    row, and every change to one cell would show as a change to its whole column in a diff)."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    df = df.map(lambda v: str(v).replace("|", "/"))
    align = tuple("right" if c in right else "left" for c in df.columns)
    text = df.to_markdown(index=False, disable_numparse=True, colalign=align)
    return "\n".join(_unpadded(line, i == 1) for i, line in enumerate(text.splitlines()))


def _unpadded(line: str, rule: bool) -> str:
    cells = [c.strip() for c in line.strip().removeprefix("|").removesuffix("|").split("|")]
    if rule:  # ":-----" (left) -> "---", "-----:" (right) -> "---:"
        return "|" + "|".join("---:" if c.endswith(":") else "---" for c in cells) + "|"
    return "| " + " | ".join(cells) + " |"
