"""The file source: a user's own JSON/JSONL texts (--papers-file). Nothing is fetched or cached; the file is
the evaluation set, so a text below the minimum length is an error, not a skip (texts.read_papers_file)."""
from __future__ import annotations

from typing import Iterator

from ..texts import Paper, parse_timestamp, read_papers_file
from .base import Source, Window


class FileSource(Source):
    name = "file"

    def __init__(self, settings, session=None):
        super().__init__(settings, session)
        self.path = settings.papers_file
        self._texts: list[Paper] | None = None

    def texts(self) -> list[Paper]:
        if self._texts is None:
            self._texts = read_papers_file(self.path)
        return self._texts

    def records(self, window: Window | None) -> Iterator[tuple[Paper, bool]]:
        """Every text in file order; a dated one outside the window is skipped with a line."""
        for paper in self.texts():
            published = paper.info.get("published")
            if window is not None and published and not window.holds(parse_timestamp(published).date()):
                self.skip(paper.paper_id, f"published {published[:10]}, not after the models' training cutoff"
                          if parse_timestamp(published).date() < window.since else
                          f"published {published[:10]}, after the window")
                continue
            yield paper, True

    def cached(self, window: Window | None) -> list[Paper]:
        return [p for p, _ in self.records(window)]

    def get(self, text_id: str) -> Paper | None:
        return next((p for p in self.texts() if p.paper_id == text_id), None)

    def describe(self) -> dict:
        return {"papers_file": str(self.path.resolve())}
