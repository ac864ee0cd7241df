"""Run directories, one lifecycle for every scenario: a new run, the latest run, resume, append-only CSVs
and a self-describing meta.json.

Every number written under results/ lives in a run directory together with the environment it came
from (device, dtype, versions, git revision, date, command line, load average), so a table can always be
traced back. Rows are appended one at a time and fsynced, so an interrupted run loses at most the row in
flight; a last line cut short by a kill is repaired before the next append and ignored when read.
A resume keeps the original meta (date, command, revision) and appends a `resumes` entry.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING


from .errors import UserError
from .fileio import naming, write_atomically
from .runlock import hold, refuse_if_held, release

if TYPE_CHECKING:
    import pandas as pd

PACKAGES = ("rwkv-bench", "torch", "transformers", "tokenizers", "lm_eval", "pandas", "numpy", "scipy", "pypdfium2")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_revision() -> str | None:
    """The checkout's commit (with '+dirty' when it has uncommitted changes), or None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment(device: str = "cpu", dtype: str | None = None) -> dict:
    """What a result depends on besides the code: machine, versions, revision, date."""
    import torch

    env = {
        "date_utc": utc_now(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "git_revision": git_revision(),
        "versions": package_versions(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "dtype": dtype,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
    return env


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def busy_warning(meta: dict) -> str | None:
    """One line for summary.md when the machine was busier than its cores at the start or end of the run."""
    cores = meta.get("cpu_count") or os.cpu_count() or 1
    seen = [(when, loads[0]) for when, loads in (("start", meta.get("load_average_start")),
                                                 ("end", meta.get("load_average_end"))) if loads]
    busy = [f"{load:.2f} at the {when}" for when, load in seen if load > cores]
    if not busy:
        return None
    return (f"Warning: the machine was busier than its {cores} cores (1-minute load average {', '.join(busy)}): "
            "timings may be inflated by other processes.")


def latest_run(kind: str, results_root: str | Path = "results") -> Path:
    root = Path(results_root) / kind
    runs = sorted(p.parent for p in root.glob("*/meta.json")) if root.is_dir() else []
    if not runs:
        raise UserError(f"--resume: no earlier run under {root}/; pass --out DIR of the run to continue")
    return runs[-1]


def open_run(kind: str, *, out: str | Path | None, resume: bool, results: tuple[str, ...],
             results_root: str | Path = "results") -> tuple[Path, dict | None]:
    """The run directory and, when resuming, its meta. A new run refuses a directory that already holds
    results (`results`: the files that say so), so two runs never mix in one table."""
    if resume:
        run_dir = Path(out) if out else latest_run(kind, results_root)
        refuse_if_held(run_dir)
        if run_dir.is_dir() and not (run_dir / "meta.json").exists():
            raise UserError(f"--resume: {run_dir} holds no meta.json, so no run began there (or it was stopped "
                            "before its first write): start it without --resume")
        meta = read_meta(run_dir)
        if meta.get("kind") != kind:
            raise UserError(f"--resume: {run_dir} is not a {kind} run directory (no meta.json of kind {kind!r})")
        return run_dir, meta
    if out is None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = Path(results_root) / kind / stamp
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a directory")
    if run_dir.is_dir():
        refuse_if_held(run_dir)
    held = [name for name in results if any(run_dir.glob(name))] if run_dir.is_dir() else []
    if held:
        raise UserError(f"{run_dir} already holds results ({held[0]}): pass --resume to continue it, "
                        "or choose another --out")
    existing = next(p for p in (run_dir, *run_dir.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to --out {run_dir}: {existing} is not a writable directory")
    return run_dir, None  # created by start_meta, once every option and input has been checked


def start_meta(run_dir: Path, kind: str, options: dict, **fields) -> dict:
    """meta.json of a new run: kind, environment, the scenario's options, and what it adds."""
    meta = {"kind": kind, **environment(options.get("device", "cpu"), options.get("dtype")),
            "load_average_start": load_average(), "options": options, **fields}
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
    hold(run_dir)
    if (run_dir / "meta.json").exists():  # another run began here since open_run looked
        release(run_dir)
        raise UserError(f"{run_dir} already holds a run (meta.json): pass --resume to continue it, "
                        "or choose another --out")
    write_json(run_dir / "meta.json", meta)
    return meta


def resume_meta(run_dir: Path, meta: dict, options: dict, **fields) -> dict:
    """A resume keeps the original date, command and revision, and appends what this command changed."""
    hold(run_dir)
    env = environment(options.get("device", "cpu"), options.get("dtype"))
    changed = {k: v for k, v in options.items() if (meta.get("options") or {}).get(k) != v}
    meta.setdefault("resumes", []).append({"date_utc": env["date_utc"], "command": env["command"],
                                           "git_revision": env["git_revision"], "changed_options": changed,
                                           "load_average_start": load_average()})
    meta.update(options=options, completed=False, **fields)
    write_json(run_dir / "meta.json", meta)
    return meta


def finish_meta(run_dir: Path, **fields) -> dict:
    meta = read_meta(run_dir)
    meta.update(completed=True, finished_utc=utc_now(), load_average_end=load_average(), **fields)
    write_json(run_dir / "meta.json", meta)
    release(run_dir)
    return meta


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically, so a reader never sees half a file."""
    write_atomically(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_meta(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def repair_tail(path: Path) -> None:
    """Cut a last line left incomplete by a kill, so the next appended row starts on its own line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
    data = path.read_bytes()
    with open(path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)


def append_row(path: str | Path, row: dict, columns: list[str]) -> None:
    append_rows(path, [row], columns)


def csv_text(rows, columns: list[str], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})
    return buf.getvalue()


def append_rows(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    """Append CSV rows (header first if the file is new) in a single write, flushed and fsynced."""
    path = Path(path)
    repair_tail(path)
    widen_header(path, columns)
    text = csv_text(rows, columns, header=not path.exists() or path.stat().st_size == 0)
    with naming(path), open(path, "a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def widen_header(path: Path, columns: list[str]) -> None:
    """A CSV begun by an older version (fewer columns) is rewritten with today's, so a resume can append."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split(",")
    if header != columns and set(header) <= set(columns):
        rewrite_rows(path, read_rows(path, dtype=str, keep_default_na=False), columns)


def read_rows(path: str | Path, columns: list[str] | None = None, **read_csv) -> pd.DataFrame:
    """Read an append-only CSV, dropping a last line cut short by a kill (`columns`: of an empty result)."""
    import pandas as pd  # here: a scaling child imports this module, and pandas costs it 0.3 s

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not a readable CSV: not UTF-8 text (byte {exc.start})") from None
    text = text[: text.rfind("\n") + 1]  # every complete row ends with a newline
    if not text.strip():
        return pd.DataFrame(columns=columns)
    try:
        return pd.read_csv(io.StringIO(text), **read_csv)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from None


def rewrite_rows(path: Path, rows: pd.DataFrame, columns: list[str]) -> None:
    """Replace a CSV atomically (a resume dropping rows of points that never committed)."""
    write_atomically(path, rows.reindex(columns=columns).to_csv(index=False))
