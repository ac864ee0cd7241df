"""The bioRxiv source: preprints first posted in the window.

Listing: bioRxiv's public details API (https://api.biorxiv.org/details/biorxiv/{from}/{to}/{cursor}: 100
preprints a page, oldest first, `messages[0].total` in all; https://api.biorxiv.org). Only first versions
are kept (a later version's preprint was first posted earlier, maybe before the window). Text: title,
abstract and, where bioRxiv serves it, the body of the full-text JATS XML (`jatsxml`, in newer answers
`jats_xml_path`); when the full text
cannot be had the text is title + abstract and the row says so (`text_source` "abstract", `note` why).
Each record keeps the preprint's licence (cc_by, cc_no, ...).
"""
from __future__ import annotations

from typing import Iterator

from ..texts import compose, normalize
from .base import FetchedSource, Window, base_url, listing_failed
from .cache import Record
from .http import FetchError, fetch, parse_xml, read_json

SITE = "https://www.biorxiv.org"


def read_page(resp) -> dict:
    data = read_json(resp, "the details API answer")
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise ValueError("the details API answer has no messages")
    return data


def jats_body(content: bytes) -> str:
    """The body of a JATS article as text: section titles and paragraphs, one a line. ValueError if the XML
    cannot be read or has no body."""
    root = parse_xml(content, "the full text")
    body = root.find(".//body")
    if body is None:
        raise ValueError("the full text has no body")
    lines = []
    for node in body.iter():
        if node.tag in ("title", "p"):
            text = " ".join("".join(node.itertext()).split())
            if text:
                lines.append(text)
    return "\n".join(lines)


class BiorxivSource(FetchedSource):
    name = "biorxiv"

    def __init__(self, settings, session=None):
        super().__init__(settings, session, api="https://api.biorxiv.org")
        self.site = base_url("biorxiv_site", SITE)

    def entries(self, window: Window) -> Iterator[dict]:
        cursor = 0
        while True:
            url = f"{self.api}/details/biorxiv/{window.since}/{window.until}/{cursor}/json"
            try:
                data = fetch(self.session, url, read_page, tries=self.settings.retries + 1)
            except FetchError as exc:
                raise listing_failed("bioRxiv", "preprints", exc.note) from None
            page = data.get("collection") or []
            yield from page
            message = data["messages"][0] if data["messages"] else {}
            total = int(message.get("total") or 0) if str(message.get("total") or "0").isdigit() else 0
            cursor += len(page)
            if not page or cursor >= total:
                return

    def records(self, window: Window) -> Iterator[tuple[Record, bool]]:
        for entry in self.entries(window):
            doi = str(entry.get("doi", "")).strip()
            if not doi:
                self.skip("?", "an entry without a DOI")
                continue
            posted = self.timestamp(doi, entry.get("date", ""), date_name="date")
            if posted is None:
                continue
            if str(entry.get("version", "1")) != "1":
                self.skip(doi, f"version {entry.get('version')}: first posted before this version's date")
                continue
            if self.in_window(doi, posted, window, event="posted"):
                yield from self.cached_or_fetched(self.cache.get(doi), lambda: self.preprint(doi, entry, posted))

    def full_text(self, entry: dict) -> tuple[str, str, bool]:
        """(body or "", why there is none, whether a later try may help)."""
        url = str(entry.get("jatsxml") or entry.get("jats_xml_path") or "")   # the field's two names seen
        if not url:
            return "", "no full text listed", False
        if url.startswith(SITE):
            url = self.site + url[len(SITE):]
        try:
            body = fetch(self.session, url, lambda r: jats_body(r.content), tries=1)
        except FetchError as exc:
            return "", f"full text: {exc.note}", exc.transient
        if len(body) < 200:
            return "", "the full text has no body to speak of", False
        return body, "", False

    def preprint(self, doi: str, entry: dict, posted) -> Record:
        title, abstract = str(entry.get("title", "")), str(entry.get("abstract", ""))
        body, note, transient = self.full_text(entry)
        text = compose(title, abstract, body)[:self.settings.max_chars]
        return Record.make(id=doi, source=self.name, title=normalize(" ".join(title.split())), published=posted,
                           text=text, text_source="fulltext" if body else "abstract", note=note,
                           retry_text=transient, licence=str(entry.get("license", "")),
                           url=f"{SITE}/content/{doi}v1")

    def describe(self) -> dict:
        return {"api": self.api}
