"""The fetched-text cache every source shares: <root>/<source>/<safe id>.json, one record per text, written
atomically as soon as it is fetched, so an interrupted fetch resumes where it stopped and `--offline` runs
from the cache alone."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Iterator, TypeVar

from ...errors import UserError
from ...fileio import write_atomically
from ..texts import Paper, parse_timestamp, sha256

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rwkv-bench")) / "uncheatable"


def safe_filename(text_id: str) -> str:
    """A file name for an id that is safe and one-to-one: [A-Za-z0-9.-] kept, anything else (a '/', '_'
    itself) as _xx hex, a leading '.' escaped too."""
    if not text_id:
        raise ValueError("empty text id")
    out = []
    for i, ch in enumerate(text_id):
        if (ch.isascii() and ch.isalnum()) or ch == "-" or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.extend(f"_{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


@dataclass
class Record:
    """One cached text of a source other than arXiv (arXiv keeps its own fields: sources.arxiv.ArxivRecord)."""
    id: str
    source: str
    title: str
    published: str                  # ISO 8601, UTC
    text_source: str                # what the text is: "article", "code", "fulltext", "abstract" ...
    chars: int
    sha256: str
    text: str
    url: str = ""
    licence: str = ""
    note: str = ""                  # why the text is less than the whole (an abstract only, say)
    retry_text: bool = False        # the full text failed for a passing reason: try again when online
    fetched: str = ""

    @classmethod
    def make(cls, *, id: str, source: str, title: str, published: dt.datetime, text: str, text_source: str,
             **extra) -> "Record":
        return cls(id=id, source=source, title=title, published=published.isoformat(), text_source=text_source,
                   chars=len(text), sha256=sha256(text), text=text,
                   fetched=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **extra)

    @property
    def published_date(self) -> dt.date:
        return parse_timestamp(self.published).date()

    def to_paper(self) -> Paper:
        return Paper(self.id, self.text, self.text_source, self.title,
                     {"published": self.published, "url": self.url, "licence": self.licence}, source=self.source)


R = TypeVar("R")


class Cache(Generic[R]):
    """<root>/<folder>/<safe id>.json holding `record_type` records (dataclasses with id, text, sha256, chars)."""

    def __init__(self, root: str | Path | None, folder: str, record_type: type = Record):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.dir = self.root / folder
        self.record_type = record_type

    def path(self, text_id: str) -> Path:
        return self.dir / (safe_filename(text_id) + ".json")

    def get(self, text_id: str) -> R | None:
        return self.load(self.path(text_id))

    def load(self, path: Path) -> R | None:
        """A record, or None if absent or damaged (wrong fields, text not matching its sha256)."""
        try:
            record = self.record_type(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None
        if sha256(record.text) != record.sha256 or len(record.text) != record.chars:
            log.warning("cache record %s does not match its checksum; ignoring it", path)
            return None
        return record

    def put(self, record: R) -> Path:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the cache directory {self.dir}: {exc.strerror}") from None
        path = self.path(record.id)
        write_atomically(path, json.dumps(dataclasses.asdict(record), ensure_ascii=False, indent=1))
        return path

    def records(self) -> Iterator[R]:
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("*.json")):
            if (record := self.load(path)) is not None:
                yield record
