"""How many sequences fit: the bytes one sequence holds, measured over a batch grid, and the largest B whose
states or KV caches fit a memory budget."""
from __future__ import annotations

import math

import pandas as pd


def measured_bytes_per_sequence(rows: pd.DataFrame, column: str = "held_mem_bytes") -> tuple[float, str] | None:
    """(bytes, how) from one (model, T)'s ok serving rows: the held memory's (`column`'s) growth from the smallest to the
    largest B over the B between them (what the loaded model and fixed buffers hold cancels out); with one
    B, its held memory over B. None without a usable row, or where the growth is not positive (a state too
    small to rise above the noise of the process's memory)."""
    if rows.empty:
        return None
    if column not in rows:
        return None
    ok = rows[(rows["status"] == "ok") & pd.to_numeric(rows[column], errors="coerce").notna()]
    ok = ok.sort_values("batch")
    if ok.empty:
        return None
    small, large = ok.iloc[0], ok.iloc[-1]
    if large["batch"] > small["batch"]:
        grew = float(large[column]) - float(small[column])
        per_seq = grew / (int(large["batch"]) - int(small["batch"]))
        how = f"(held at B={int(large['batch'])} - held at B={int(small['batch'])}) / {int(large['batch'] - small['batch'])}"
    else:
        per_seq = float(large[column]) / int(large["batch"])
        how = f"held at B={int(large['batch'])} / {int(large['batch'])}"
    return (per_seq, how) if per_seq > 0 else None


def capacity_batch(budget_bytes: float | None, per_seq_bytes: float | None) -> int | None:
    """The largest B with B x per_seq_bytes <= budget_bytes."""
    if not budget_bytes or not per_seq_bytes or per_seq_bytes <= 0:
        return None
    return max(0, math.floor(budget_bytes / per_seq_bytes))
