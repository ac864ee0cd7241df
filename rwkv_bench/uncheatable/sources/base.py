"""The interface every text source implements (see the package docstring for the sources)."""
from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

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
