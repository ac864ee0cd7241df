"""The interface every text source implements (see the package docstring for the sources)."""
from __future__ import annotations

import datetime as dt
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ...errors import UserError
from ..texts import parse_timestamp
from .cache import Cache, Record

CACHE_MAX_CHARS = 50_000    # a cached record keeps at most this much text (more if --chars asks for more)
SOURCES = ("arxiv", "wikipedia", "github", "biorxiv", "file")


@dataclass(frozen=True)
class Window:
    """Publication dates kept, inclusive, UTC."""
    since: dt.date
    until: dt.date

    def holds(self, day: dt.date) -> bool:
        return self.since <= day <= self.until


@dataclass
class FetchSettings:
    """How every source fetches (the parsed options)."""
    cache_dir: Path | None
    delay: float | None                 # seconds between requests (None: each source's min_delay)
    retries: int
    page_size: int
    max_chars: int                      # text kept per cached record
    categories: list[str] = field(default_factory=list)     # arXiv
    wikipedia_lang: str = "en"
    github_extensions: tuple[str, ...] = (".py",)
    papers_file: Path | None = None


@dataclass
class Skipped:
    """A listed item that gave no text, and why: the run says each one in a line and keeps the list."""
    id: str
    why: str


class Source(ABC):
    """A plug-in: `records` yields (record, came from the cache); a record has id, source, title, published
    (ISO 8601), text, text_source, and `to_paper()`. Items that cannot give a text go to `self.skipped`."""
    name: str
    min_delay: float = 1.0              # seconds between requests: the default, and the least --delay allowed

    def __init__(self, settings: FetchSettings, session=None):
        self.settings = settings
        self.skipped: list[Skipped] = []
        self._session = session

    @property
    def session(self):
        if self._session is None:
            from .http import PoliteSession

            self._session = PoliteSession(self.delay, self.settings.retries, headers=self.headers())
        return self._session

    @property
    def delay(self) -> float:
        return self.min_delay if self.settings.delay is None else self.settings.delay

    def headers(self) -> dict:
        return {}

    def skip(self, text_id: str, why: str) -> None:
        """An item that gives no text: kept with its reason (gather says each in a line; meta.json lists them)."""
        self.skipped.append(Skipped(text_id, why))

    @abstractmethod
    def records(self, window: Window) -> Iterator[tuple[object, bool]]:
        """Texts published in `window`, fetched (and cached) as they are asked for."""

    @abstractmethod
    def cached(self, window: Window) -> list:
        """The cached texts published in `window`, newest first."""

    @abstractmethod
    def get(self, text_id: str):
        """The text `text_id` as it was fetched (from the cache), or None."""

    def describe(self) -> dict:
        """What meta.json records about where this source's texts came from."""
        return {}


def base_url(source: str, default: str) -> str:
    """A source's API root; RWKV_BENCH_<SOURCE>_URL points it at a mirror (or a test server)."""
    return os.environ.get(f"RWKV_BENCH_{source.upper()}_URL", default).rstrip("/")


def listing_failed(api: str, texts: str, note: str) -> UserError:
    """The error that ends a run whose listing request failed: what was fetched is kept for the next run."""
    return UserError(f"the {api} API failed ({note}); {texts} fetched so far are cached: "
                     "rerun later to resume, or use --offline")


class FetchedSource(Source):
    """A source that fetches over the network from `self.api`, its API root (RWKV_BENCH_<NAME>_URL points it at
    a mirror or a test server), and keeps every text in `self.cache`: <cache dir>/<cache_folder>/, one
    `record_type` record a text."""
    record_type: type = Record

    def __init__(self, settings: FetchSettings, session=None, *, api: str, cache_folder: str | None = None):
        super().__init__(settings, session)
        self.api = base_url(self.name, api)
        # a mirror's owner sets its own pace: min_delay is the public API's terms, so it floors --delay there only
        self.on_mirror = self.api != api.rstrip("/")
        self.cache = Cache(settings.cache_dir, cache_folder or self.name, self.record_type)

    def timestamp(self, text_id: str, stamp, date_name: str = "creation date") -> dt.datetime | None:
        """The item's timestamp, or None (skipped with a line) when it is malformed."""
        try:
            return parse_timestamp(stamp)
        except ValueError:
            self.skip(text_id, f"a malformed {date_name} {stamp!r}")
            return None

    def in_window(self, text_id: str, when: dt.datetime, window: Window, event: str = "created") -> bool:
        """Whether the item's date is in the window; when not, it is skipped with a line."""
        if window.holds(when.date()):
            return True
        self.skip(text_id, f"{event} {when.date()}, outside the window")
        return False

    def dated(self, text_id: str, stamp, window: Window) -> dt.datetime | None:
        """The item's creation time, or None (skipped with a line) when malformed or outside the window."""
        when = self.timestamp(text_id, stamp)
        return when if when is not None and self.in_window(text_id, when, window) else None

    def stale(self, record) -> bool:
        """Whether a cached record is fetched again: its full text failed for a passing reason."""
        return record.retry_text

    def cached_or_fetched(self, cached, fetch_record: Callable[[], object | None]) -> Iterator[tuple[object, bool]]:
        """(cached, True) when that record can be reused, else the one `fetch_record` gives, cached at once,
        and False; nothing when it gives none (it said why)."""
        if cached is not None and not self.stale(cached):
            yield cached, True
            return
        record = fetch_record()
        if record is not None:
            self.cache.put(record)
            yield record, False

    def cached(self, window: Window) -> list:
        chosen = [r for r in self.cache.records() if window.holds(r.published_date)]
        return sorted(chosen, key=lambda r: (r.published, r.id), reverse=True)

    def get(self, text_id: str):
        return self.cache.get(text_id)
