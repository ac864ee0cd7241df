"""One live writer per run directory.

A run holds `<run_dir>/.lock` (filelock: flock on POSIX, so the lock dies with its holder, even after
kill -9, and `--resume` after a crash just works) from the moment it writes meta.json until it finishes.
A second run into the same directory, or a `report` of it meanwhile, stops with one line naming the
holder (pid, host, command, start time, kept beside the lock in `.lock.holder`) and changes nothing.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import UserError
from .fileio import write_atomically

LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.holder"

_held: dict[str, FileLock] = {}  # run directories this process writes


def _key(run_dir: Path) -> str:
    return str(Path(run_dir).resolve())


def holder(run_dir: Path) -> str:
    """Who holds the lock, in words, from what the holder wrote beside it."""
    try:
        info = json.loads((Path(run_dir) / HOLDER_FILE).read_text())
        return (f"pid {info['pid']} on {info['host']} (`{info['command']}`, since {info['since_utc']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def busy_error(run_dir: Path) -> UserError:
    return UserError(f"{run_dir} is being written by {holder(run_dir)}: nothing was changed; wait for it to "
                     "finish, or stop it and continue with --resume")


def _take_lock(run_dir: Path) -> FileLock:
    """The run directory's lock, taken at once, or one line when another live process holds it."""
    lock = FileLock(Path(run_dir) / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise busy_error(run_dir) from None
    return lock


def hold(run_dir: Path) -> None:
    """Make this process the run directory's one writer (a no-op if it is already), or raise one line."""
    key = _key(run_dir)
    if key in _held:
        return
    _held[key] = _take_lock(run_dir)
    write_atomically(Path(run_dir) / HOLDER_FILE, json.dumps({
        "pid": os.getpid(), "host": platform.node(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "since_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))


def release(run_dir: Path) -> None:
    lock = _held.pop(_key(run_dir), None)
    if lock is not None:
        (Path(run_dir) / HOLDER_FILE).unlink(missing_ok=True)
        lock.release()


def release_all() -> None:
    for run_dir in list(_held):
        release(Path(run_dir))


def refuse_if_held(run_dir: Path) -> None:
    """Raise one line if another live process holds `run_dir`. Creates nothing: a directory that was never
    locked (a committed reference run, say) is left exactly as it is."""
    if _key(run_dir) in _held or not (Path(run_dir) / LOCK_FILE).exists():
        return
    _take_lock(run_dir).release()
