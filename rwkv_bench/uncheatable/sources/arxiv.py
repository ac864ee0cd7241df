"""The arXiv source: new papers listed by the arXiv API (Atom), body text from the first version's PDF
(https://export.arxiv.org/pdf/<id>v1: the text as first published in the window; sources.pdf_text), each
paper cached as one record as soon as it is fetched. When the PDF cannot be had, the text falls back to
title + abstract and the record says so (`text_source = "abstract"`, `body_note` why). arXiv asks for at
most one request every three seconds (https://info.arxiv.org/help/api/tou.html): `min_delay`.
"""
from __future__ import annotations

import datetime as dt
import difflib
import logging
import re
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlencode

import requests

from ...errors import UserError
from ..texts import Paper, compose, normalize, sha256
from .base import FetchedSource, Window, listing_failed
from .http import FetchError, fetch, parse_xml
from .pdf_text import body_from_pdf_text, pdf_text

log = logging.getLogger(__name__)

MIN_DELAY_S = 3.0
BASE_URL = "https://export.arxiv.org"
MAX_PDF_BYTES = 60 * 2**20

# arXiv's category taxonomy (https://arxiv.org/category_taxonomy): archive -> subject classes.
_TAXONOMY = {
    "cs": "AI AR CC CE CG CL CR CV CY DB DC DL DM DS ET FL GL GR GT HC IR IT LG LO MA MM MS NA NE NI OH OS "
          "PF PL RO SC SD SE SI SY",
    "econ": "EM GN TH",
    "eess": "AS IV SP SY",
    "math": "AC AG AP AT CA CO CT CV DG DS FA GM GN GR GT HO IT KT LO MG MP NA NT OA OC PR QA RA RT SG SP ST",
    "astro-ph": "CO EP GA HE IM SR",
    "cond-mat": "dis-nn mes-hall mtrl-sci other quant-gas soft stat-mech str-el supr-con",
    "nlin": "AO CD CG PS SI",
    "physics": "acc-ph ao-ph app-ph atm-clus atom-ph bio-ph chem-ph class-ph comp-ph data-an ed-ph flu-dyn "
               "gen-ph geo-ph hist-ph ins-det med-ph optics plasm-ph pop-ph soc-ph space-ph",
    "q-bio": "BM CB GN MN NC OT PE QM SC TO",
    "q-fin": "CP EC GN MF PM PR RM ST TR",
    "stat": "AP CO ME ML OT TH",
}
_STANDALONE = ["gr-qc", "hep-ex", "hep-lat", "hep-ph", "hep-th", "math-ph", "nucl-ex", "nucl-th", "quant-ph"]
CATEGORIES = frozenset([f"{a}.{s}" for a, subs in _TAXONOMY.items() for s in subs.split()] + _STANDALONE)

_NEW_ID = re.compile(r"^(\d{4}\.\d{4,5})(?:v(\d+))?$")
_OLD_ID = re.compile(r"^([a-z][a-z.-]*(?:\.[A-Z]{2})?/\d{7})(?:v(\d+))?$")


# ---- user input ----

def parse_categories(text: str | None) -> list[str]:
    """Comma-separated taxonomy codes (cs.CL,cs.LG); an unknown one is a UserError naming the closest."""
    if not text:
        return []
    cats = [c.strip() for c in text.split(",") if c.strip()]
    for cat in cats:
        if cat not in CATEGORIES:
            by_case = {c.lower(): c for c in CATEGORIES}
            close = [by_case[cat.lower()]] if cat.lower() in by_case else \
                difflib.get_close_matches(cat, sorted(CATEGORIES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else " (see https://arxiv.org/category_taxonomy)"
            raise UserError(f"unknown arXiv category {cat!r}{hint}")
    return list(dict.fromkeys(cats))


def build_query(since: dt.date, until: dt.date, categories: list[str]) -> str:
    """The arXiv API search_query: submission dates (GMT, inclusive) and any of the categories."""
    window = f"submittedDate:[{since:%Y%m%d}0000 TO {until:%Y%m%d}2359]"
    if not categories:
        return window
    cats = " OR ".join(f"cat:{c}" for c in categories)
    return f"({cats}) AND {window}"


# ---- ids and file names ----

def split_id(short_id: str) -> tuple[str, int | None]:
    """'2501.01234v2' -> ('2501.01234', 2); 'hep-th/9901001v1' -> ('hep-th/9901001', 1)."""
    short_id = short_id.strip()
    for pattern in (_NEW_ID, _OLD_ID):
        if m := pattern.match(short_id):
            return m.group(1), int(m.group(2)) if m.group(2) else None
    raise ValueError(f"not an arXiv id: {short_id!r}")


# ---- cache ----

@dataclass
class ArxivRecord:
    """One cached paper. `text` is title + abstract + the beginning of the body (NFC)."""
    id: str
    version: int
    title: str
    published: str                  # ISO 8601, UTC
    categories: list[str]
    text_source: str                # "pdf" or "abstract"
    chars: int
    sha256: str
    text: str
    body_note: str = ""             # why there is no body, when text_source == "abstract"
    retry_body: bool = False        # the body failed for a passing reason: try again when online
    truncated: bool = False         # the text was cut at the cache limit
    latest_version: int | None = None
    fetched: str = ""

    def to_paper(self) -> Paper:
        return Paper(self.id, self.text, self.text_source, self.title,
                     {"version": self.version, "published": self.published, "categories": self.categories,
                      "url": f"https://arxiv.org/abs/{self.id}v{self.version}", "licence": ""}, source="arxiv")

    @property
    def published_date(self) -> dt.date:
        return dt.datetime.fromisoformat(self.published).astimezone(dt.timezone.utc).date()


def download_pdf(session: requests.Session, url: str) -> bytes:
    """The bytes of the PDF at `url`; FetchError when there is none to be had."""
    body = fetch(session, url).content
    if not body.startswith(b"%PDF"):
        raise FetchError("the response is not a PDF", transient=False)
    if len(body) > MAX_PDF_BYTES:
        raise FetchError(f"PDF larger than {MAX_PDF_BYTES >> 20} MiB", transient=False)
    return body


# ---- the arXiv API: search pages in Atom ----

_ATOM = {"atom": "http://www.w3.org/2005/Atom", "opensearch": "http://a9.com/-/spec/opensearch/1.1/"}


@dataclass
class Entry:
    """One paper as an API page lists it (https://info.arxiv.org/help/api/user-manual.html)."""
    short_id: str                   # '2501.01234v2': the latest version
    title: str
    summary: str
    published: dt.datetime          # of the first version, UTC
    categories: list[str]


@dataclass
class Feed:
    total: int                      # opensearch:totalResults, for the whole query
    entries: list[Entry]


def search_url(base: str, window: Window, categories: list[str], start: int, page_size: int) -> str:
    """One page of the query, newest submissions first."""
    return f"{base}/api/query?" + urlencode({"search_query": build_query(window.since, window.until, categories),
                                      "sortBy": "submittedDate", "sortOrder": "descending",
                                      "start": str(start), "max_results": str(page_size)})


def parse_feed(content: bytes) -> Feed:
    """An API page; ValueError if it is not Atom. Entries without an id or a date are skipped."""
    root = parse_xml(content, "the API page")
    if root.tag != f"{{{_ATOM['atom']}}}feed":
        raise ValueError(f"the API page is not an Atom feed (root {root.tag})")
    entries = []
    for node in root.iterfind("atom:entry", _ATOM):
        url, published = node.findtext("atom:id", "", _ATOM), node.findtext("atom:published", "", _ATOM)
        if "/abs/" not in url or not published:
            log.warning("skipping an API entry without an id or a date: %r", url)
            continue
        entries.append(Entry(
            short_id=url.rsplit("/abs/", 1)[1].strip(),
            title=" ".join(node.findtext("atom:title", "", _ATOM).split()),
            summary=node.findtext("atom:summary", "", _ATOM),
            # fromisoformat takes 'Z' only from Python 3.11
            published=dt.datetime.fromisoformat(published.strip().replace("Z", "+00:00")).astimezone(dt.timezone.utc),
            categories=[c.get("term") for c in node.iterfind("atom:category", _ATOM) if c.get("term")]))
    total = node.text if (node := root.find("opensearch:totalResults", _ATOM)) is not None else ""
    return Feed(int(total) if (total or "").strip().isdigit() else len(entries), entries)


def list_entries(session: requests.Session, base: str, window: Window, categories: list[str], page_size: int,
                 tries: int) -> Iterator[Entry]:
    """Every entry of the query, page after page. A later page that comes back empty is a known arXiv
    hiccup and is asked again. Raises FetchError when a page cannot be had."""
    start = 0
    while True:
        first = start == 0

        def read(resp: requests.Response) -> Feed:
            feed = parse_feed(resp.content)
            if not feed.entries and not first:
                raise ValueError("an unexpectedly empty page")
            return feed

        feed = fetch(session, search_url(base, window, categories, start, page_size), read, tries=tries)
        yield from feed.entries
        start += len(feed.entries)
        if not feed.entries or start >= feed.total:
            return


# ---- the source ----

class ArxivSource(FetchedSource):
    name = "arxiv"
    min_delay = MIN_DELAY_S
    record_type = ArxivRecord

    def __init__(self, settings, session=None):
        super().__init__(settings, session, api=BASE_URL)

    def records(self, window: Window) -> Iterator[tuple[ArxivRecord, bool]]:
        """Newest first: (record, came from the cache). Cached records are reused (no PDF request) unless their
        body failed for a passing reason or they hold less text than asked; new ones are cached at once."""
        s = self.settings
        entries = list_entries(self.session, self.api, window, s.categories, s.page_size, s.retries + 1)
        while True:
            try:
                entry = next(entries)
            except StopIteration:
                return
            except FetchError as exc:
                raise listing_failed("arXiv", "papers", exc.note) from None
            try:
                paper_id, _ = split_id(entry.short_id)
            except ValueError:
                self.skip(entry.short_id, "an unexpected id")
                continue
            if self.in_window(paper_id, entry.published, window, event="published"):
                yield from self.cached_or_fetched(self.cache.get(paper_id), lambda: self.record_from_entry(entry))

    def stale(self, record: ArxivRecord) -> bool:
        """Its body failed for a passing reason, or it holds less text than asked."""
        return record.retry_body or (record.truncated and record.chars < self.settings.max_chars)

    def paper_body(self, paper_id: str, abstract: str) -> tuple[str, str, bool]:
        """(body text or "", why there is none, whether trying again later may help)."""
        try:
            data = download_pdf(self.session, f"{self.api}/pdf/{paper_id}v1")
        except FetchError as exc:
            return "", exc.note, exc.transient
        try:
            body = body_from_pdf_text(pdf_text(data, self.settings.max_chars), abstract)
        except Exception as exc:  # noqa: BLE001 - a damaged PDF leaves the paper with its abstract
            return "", f"PDF text extraction failed: {type(exc).__name__}", False
        if len(body.strip()) < 200:
            return "", "the PDF has no extractable text (scanned?)", False
        return body, "", False

    def record_from_entry(self, entry: Entry) -> ArxivRecord:
        paper_id, latest = split_id(entry.short_id)
        body, note, transient = self.paper_body(paper_id, entry.summary)
        full = compose(entry.title, entry.summary, body)
        text = full[:self.settings.max_chars]
        return ArxivRecord(id=paper_id, version=1, title=normalize(entry.title),
                           published=entry.published.isoformat(), categories=list(entry.categories),
                           text_source="pdf" if body else "abstract", chars=len(text), sha256=sha256(text), text=text,
                           body_note=note, retry_body=transient, truncated=len(full) > len(text),
                           latest_version=latest, fetched=dt.datetime.now(dt.timezone.utc).isoformat())

    def cached(self, window: Window) -> list[ArxivRecord]:
        """Cached records published in the window (and in one of the categories), newest first."""
        cats = set(self.settings.categories)
        return [r for r in super().cached(window) if not cats or set(r.categories) & cats]

    def describe(self) -> dict:
        return {"categories": self.settings.categories}
