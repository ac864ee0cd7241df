"""Run directories: append-only CSVs and a self-describing meta.json.

Every number written under results/ lives in a run directory together with the environment it came
from (device, dtype, versions, git revision, date, command line), so a table can always be traced back.
Rows are appended one at a time and flushed to disk, so an interrupted run loses at most the row in flight.
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

import pandas as pd

PACKAGES = ("rwkv-bench", "torch", "transformers", "tokenizers", "lm_eval", "arxiv", "pandas", "numpy")


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


def new_run_dir(kind: str, out: str | Path | None = None, results_root: str | Path = "results") -> Path:
    """`out` if given, else results/<kind>/<UTC timestamp>."""
    if out is None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = Path(results_root) / kind / stamp
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def write_meta(run_dir: str | Path, **fields) -> dict:
    """meta.json: the environment plus whatever the scenario adds (models, options, protocol)."""
    meta = {"kind": fields.pop("kind", None), **environment(fields.pop("device", "cpu"),
                                                             fields.pop("dtype", None)), **fields}
    write_json(Path(run_dir) / "meta.json", meta)
    return meta


def read_meta(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def append_row(path: str | Path, row: dict, columns: list[str]) -> None:
    """Append one CSV row (header first if the file is new) in a single write, flushed and fsynced."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    new = not path.exists() or path.stat().st_size == 0
    if new:
        writer.writeheader()
    writer.writerow({c: row.get(c) for c in columns})
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: str | Path) -> pd.DataFrame:
    """Read an append-only CSV, dropping a last line cut short by a kill."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):  # a row cut short by a kill: every complete row ends with a newline
        text = text[: text.rfind("\n") + 1]
    return pd.read_csv(io.StringIO(text)) if text.strip() else pd.DataFrame()
