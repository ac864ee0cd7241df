"""Writing files so that a reader never sees half of one: the one atomic-write helper every module uses.

No pandas or torch here: report/build.py and the CLI import this at start-up.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError while writing `path` names it: a failed write() or fsync() (a full disk) carries no file
    name of its own, and the CLI's one-line message says which file could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """A file written whole or not at all: a temp file beside it, fsynced, renamed over `path`.
    On failure (disk full) the temp file is removed and `path` keeps its old content."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with naming(path), open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
