"""The uncheatable run directory's format: every file name, column and dtype, and the one reader and writer
of each. The run loop writes through this module and the report reads through it; nothing else knows the
layout.

    meta.json                 kind "uncheatable" (META_KEYS: what the run adds to recording's fields)
    papers.csv                what was scored: one row per text (PAPER_COLUMNS; no text, its sha256)
    per_paper.csv             one row per (model, text), appended and fsynced as each text is scored
    per_paper.rank<k>.csv     under torchrun, rank k's rows; merged into per_paper.csv when the run completes
    token_logprobs/<i>-<j>.npy  while the run goes on: text j's per-token log-probabilities under model i
    token_logprobs.npz        all of them, packed in per_paper.csv's row order when the run completes

token_logprobs.npz holds five arrays: `models` (the model specs), and per scored text, in per_paper.csv's
row order, `model` (an index into `models`), `paper_id`, and `offsets` (one more than texts): that text's
float32 natural-log probabilities are `logprobs[offsets[i]:offsets[i + 1]]`, the first token's first.
"""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..fileio import write_atomically
from ..recording import append_row, csv_text, read_meta, read_rows

KIND = "uncheatable"
META = "meta.json"
PAPERS = "papers.csv"
PER_PAPER = "per_paper.csv"
PART_GLOB = "per_paper.rank*.csv"
TOKENS_DIR = "token_logprobs"
TOKENS_FILE = "token_logprobs.npz"
RESULT_FILES = (PER_PAPER, PAPERS, PART_GLOB)   # a directory holding one of these holds a run

PER_PAPER_COLUMNS = ["model", "paper_id", "text_source", "tokens", "bytes", "chars", "logprob_nats", "bits",
                     "bits_per_byte", "bits_per_char", "compression_rate_pct", "seconds", "tokens_per_s",
                     "random_weights", "implementation", "source"]
PAPER_COLUMNS = ["paper_id", "text_source", "chars", "bytes", "sha256", "version", "published", "categories",
                 "title", "source", "url", "licence"]
# meta.json keys this scenario adds (besides recording's environment and options)
META_KEYS = ("source", "sources", "papers_file", "window", "after", "cutoffs", "categories", "cache_dir",
             "offline", "fetch", "fetch_settings", "dropped", "shortfall", "papers_requested", "papers", "chars",
             "min_chars", "ids", "model_specs", "models", "stride", "chunk_tokens", "bootstrap", "protocol",
             "distributed")


# ---- papers.csv ----

def write_papers(run_dir: Path, rows: list[dict]) -> None:
    write_atomically(run_dir / PAPERS, pd.DataFrame(rows).reindex(columns=PAPER_COLUMNS).to_csv(index=False))


def read_papers(run_dir: Path) -> pd.DataFrame:
    """papers.csv as text: ids, digests, sources ('2501.01230' must not become a float). Without a source
    column, every row has meta.json's source."""
    rows = pd.read_csv(run_dir / PAPERS, dtype=str, keep_default_na=False)
    if "source" not in rows:
        rows["source"] = read_meta(run_dir).get("source", "file")
    return rows


# ---- per_paper.csv and the rank parts ----

def rows_path(run_dir: Path, rank: int | None) -> Path:
    """Where a process appends its rows: per_paper.csv, or its rank's part under torchrun."""
    return run_dir / (PER_PAPER if rank is None else f"per_paper.rank{rank}.csv")


def append_score(path: Path, row: dict) -> None:
    append_row(path, row, PER_PAPER_COLUMNS)


def read_per_paper(path: Path) -> pd.DataFrame:
    """A row file (per_paper.csv or a rank's part) with ids kept as strings; without a source column, the
    source reads as empty."""
    rows = read_rows(path, PER_PAPER_COLUMNS, dtype={"paper_id": str, "model": str, "source": str},
                     keep_default_na=False, na_values={"logprob_nats": [""]})
    if "source" not in rows:
        rows["source"] = ""
    return rows


def row_files(run_dir: Path) -> list[Path]:
    """per_paper.csv and the part files of ranks, whichever exist."""
    return [p for p in [run_dir / PER_PAPER, *sorted(run_dir.glob(PART_GLOB))] if p.is_file()]


def done_pairs(run_dir: Path) -> set[tuple[str, str]]:
    """(model, paper_id) pairs with a row in per_paper.csv or in any rank's part file."""
    done = set()
    for path in row_files(run_dir):
        rows = read_per_paper(path)
        done |= set(zip(rows["model"], rows["paper_id"]))
    return done


def merge_parts(run_dir: Path, models: list[str], ids: list[str]) -> None:
    """per_paper.csv and every rank's part into per_paper.csv, one row per (model, paper) in the single-process
    order (models, then papers, in the given order), values as written; then the parts are removed."""
    parts = sorted(run_dir.glob(PART_GLOB))
    if not parts:
        return
    rank = {(m, pid): (i, j) for i, m in enumerate(models) for j, pid in enumerate(ids)}
    rows: dict[tuple, dict] = {}
    for path in [run_dir / PER_PAPER, *parts]:
        for row in read_rows(path, dtype=str, keep_default_na=False).to_dict("records"):
            rows.setdefault((row["model"], row["paper_id"]), row)
    ordered = sorted(rows.items(), key=lambda kv: rank.get(kv[0], (len(models), len(ids))))
    write_atomically(run_dir / PER_PAPER, csv_text((row for _, row in ordered), PER_PAPER_COLUMNS, header=True))
    for path in parts:
        path.unlink()


# ---- per-token log-probabilities ----

def save_token_logprobs(run_dir: Path, model_index: int, paper_index: int, logprobs: np.ndarray) -> None:
    """One text's log-probabilities, written whole or not at all (before its row, so a row implies them)."""
    path = run_dir / TOKENS_DIR / f"{model_index}-{paper_index}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, logprobs.astype(np.float32))
    write_atomically(path, buf.getvalue())


def token_files(run_dir: Path) -> list[tuple[int, int, Path]]:
    """(model index, paper index, path) of every token_logprobs/<i>-<j>.npy, in index order."""
    folder = run_dir / TOKENS_DIR
    if not folder.is_dir():
        return []
    return sorted((*(int(x) for x in path.stem.split("-")), path) for path in folder.glob("*-*.npy"))


def read_token_logprobs(run_dir: str | Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Every scored text's per-token natural-log probabilities (float32), by model: {model: [(paper_id,
    array), ...]}, packed or still loose (indices into meta.json's model_specs and ids). Empty when none."""
    run_dir = Path(run_dir)
    out: dict[str, list] = {}
    packed = run_dir / TOKENS_FILE
    if packed.is_file():
        with np.load(packed, allow_pickle=False) as z:
            models, which, ids, offsets, values = (z[k] for k in ("models", "model", "paper_id", "offsets",
                                                                    "logprobs"))
        for i, (m, pid) in enumerate(zip(which, ids)):
            out.setdefault(str(models[m]), []).append((str(pid), values[offsets[i]:offsets[i + 1]]))
        return out
    meta = read_meta(run_dir)
    specs, ids = meta.get("model_specs") or [], meta.get("ids") or []
    for i, j, path in token_files(run_dir):
        if i < len(specs) and j < len(ids):
            out.setdefault(specs[i], []).append((ids[j], np.load(path)))
    return out


def pack_token_logprobs(run_dir: Path, models: list[str], ids: list[str]) -> Path | None:
    """token_logprobs/ (and an earlier token_logprobs.npz) into one token_logprobs.npz in per_paper.csv's row
    order; the directory is removed. Rows without log-probabilities are left out. None: nothing to pack."""
    arrays: dict[tuple[str, str], np.ndarray] = {}
    packed = run_dir / TOKENS_FILE
    if packed.is_file():
        for model, items in read_token_logprobs(run_dir).items():
            arrays.update({(model, pid): values for pid, values in items})
    for i, j, path in token_files(run_dir):
        arrays[(models[i], ids[j])] = np.load(path)
    if not arrays:
        return None
    rows = read_per_paper(run_dir / PER_PAPER)
    keys = [(m, pid) for m, pid in zip(rows["model"], rows["paper_id"]) if (m, pid) in arrays and m in models]
    lengths = np.array([len(arrays[k]) for k in keys], dtype=np.int64)
    buf = io.BytesIO()
    np.savez_compressed(
        buf, models=np.array(models, dtype=str), model=np.array([models.index(m) for m, _ in keys], dtype=np.int32),
        paper_id=np.array([pid for _, pid in keys], dtype=str),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        logprobs=np.concatenate([arrays[k] for k in keys]).astype(np.float32) if keys else np.zeros(0, np.float32))
    write_atomically(packed, buf.getvalue())
    if (run_dir / TOKENS_DIR).is_dir():
        shutil.rmtree(run_dir / TOKENS_DIR)
    return packed
