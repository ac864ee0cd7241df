"""An nlp run directory's format: its files, their columns, and the one reader and writer of each.

    table.csv                      one row per number lm-eval reported: TABLE_COLUMNS
    tokens.csv                     work per model x task x request type: TOKEN_COLUMNS (its rows commit a task)
    results_<model>.json           lm-eval's own results dict per model (tasks merged), plus our token counts
    samples_<model>_<task>.jsonl   lm-eval's per-request records (--log-samples)
    meta.json                      recording's environment keys, plus META_KEYS
    table.md, nlp_*.{png,svg}      built by report.render from the files above

The run writes only through `open_run`, `start`, `append_metrics`, `write_results`, `write_samples`,
`append_tokens` and `finish`; the report and a resume read only through `read_table`, `read_tokens`,
`read_results`, `committed_tasks` and `read_meta`. Column names are a contract: add columns, never rename.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from .. import recording
from ..fileio import write_atomically
from . import MODEL_NAME
from ..recording import append_rows, read_rows, rewrite_rows

KIND = "nlp"
TABLE_CSV = "table.csv"
TOKENS_CSV = "tokens.csv"
RESULT_FILES = (TABLE_CSV, TOKENS_CSV, "results_*.json", "samples_*.jsonl")  # a directory holding any has results

# the `runner` column: which lm-eval model ran a spec
RWKV_BENCH_LM = MODEL_NAME     # ours (lm_eval_model.py), as registered with lm-eval: state reuse
HF_LM = "lm-eval hf"           # lm-eval's own HFLM

TABLE_COLUMNS = ["task", "metric", "filter", "model", "value", "stderr", "higher_is_better", "n_samples",
                 "num_fewshot", "random_weights", "runner", "implementation", "run_task"]
TOKEN_COLUMNS = ["model", "task", "request_type", "requests", "tokens_processed", "tokens_padding",
                 "tokens_reencode", "forward_passes", "reencode_over_processed", "model_time_s", "wall_s", "runner",
                 "random_weights"]

# meta.json keys an nlp run adds to recording's environment: the options as resolved, the task names run
# (tags expanded), whether it ran offline, the task folders, the paper's metric per task, each model (spec,
# label, runner, implementation, identity), how the work is counted, and under torchrun the ranks
META_KEYS = ("options", "tasks", "offline", "include_paths", "paper_metrics", "models", "protocol", "distributed")


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def results_path(run_dir: Path, model: str) -> Path:
    return Path(run_dir) / f"results_{slug(model)}.json"


def samples_path(run_dir: Path, model: str, task: str) -> Path:
    return Path(run_dir) / f"samples_{slug(model)}_{slug(task)}.jsonl"


# ---- writers ----

def open_run(out, resume: bool) -> tuple[Path, dict | None]:
    """The run directory (new, or the one to resume) and its meta.json when resuming."""
    return recording.open_run(KIND, out=out, resume=resume, results=RESULT_FILES)


def start(run_dir: Path, options: dict, old_meta: dict | None, **fields) -> None:
    """meta.json of a new run, or a resume's entry appended to the old one."""
    unknown = set(fields) - set(META_KEYS)
    assert not unknown, f"not an nlp meta.json key: {unknown}"
    if old_meta is not None:
        recording.resume_meta(run_dir, old_meta, options, **fields)
    else:
        recording.start_meta(run_dir, KIND, options, **fields)


def finish(run_dir: Path, models: list[dict]) -> None:
    recording.finish_meta(run_dir, models=models)


def append_metrics(run_dir: Path, rows: list[dict]) -> None:
    append_rows(Path(run_dir) / TABLE_CSV, rows, TABLE_COLUMNS)


def append_tokens(run_dir: Path, rows: list[dict]) -> None:
    """tokens.csv rows of one (model, task): written last, they commit it (see committed_tasks)."""
    append_rows(Path(run_dir) / TOKENS_CSV, rows, TOKEN_COLUMNS)


def _json_text(data) -> str:
    from lm_eval.utils import handle_non_serializable  # lm-eval's results hold numpy values and functions

    return json.dumps(data, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n"


def write_results(run_dir: Path, model: str, data: dict) -> None:
    write_atomically(results_path(run_dir, model), _json_text(data))


def write_samples(run_dir: Path, model: str, task: str, samples: dict) -> None:
    from lm_eval.utils import handle_non_serializable

    lines = [json.dumps({"task": name, **record}, default=handle_non_serializable, ensure_ascii=False) + "\n"
             for name, records in samples.items() for record in records]
    write_atomically(samples_path(run_dir, model, task), "".join(lines))


# ---- readers ----

def read_meta(run_dir: Path) -> dict:
    return recording.read_meta(run_dir)


def run_options(meta: dict) -> dict:
    """A run's options: meta.json's "options", over its top-level keys, where the committed
    results/reference/nlp-local keeps them."""
    return {**meta, **(meta.get("options") or {})}


def read_table(run_dir: Path) -> pd.DataFrame:
    return read_rows(Path(run_dir) / TABLE_CSV)


def read_tokens(run_dir: Path) -> pd.DataFrame:
    return read_rows(Path(run_dir) / TOKENS_CSV)


def read_results(run_dir: Path, model: str) -> dict | None:
    path = results_path(run_dir, model)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def committed_tasks(run_dir: Path) -> set[tuple[str, str]]:
    """(model, task) pairs whose tokens.csv rows were written: the last write of a finished task. Drops the
    table.csv rows of any other pair (a task killed half-way is run again on resume)."""
    tokens = read_rows(Path(run_dir) / TOKENS_CSV, TOKEN_COLUMNS, dtype=str, keep_default_na=False)
    done = set(zip(tokens["model"], tokens["task"]))
    table = read_rows(Path(run_dir) / TABLE_CSV, TABLE_COLUMNS, keep_default_na=False)
    if not table.empty:
        keep = [(m, t) in done for m, t in zip(table["model"].astype(str), table["run_task"].astype(str))]
        if not all(keep):
            rewrite_rows(Path(run_dir) / TABLE_CSV, table[keep], TABLE_COLUMNS)
    return done
