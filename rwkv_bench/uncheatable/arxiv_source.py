"""New arXiv papers: listing from the arXiv API (Atom), body text from the PDF (PDFium), a local cache.

This is the only module of the uncheatable eval that touches the network. Every request (API pages and
PDFs) goes through one rate-limited `requests` session (`PoliteSession`, which callers and tests may pass
in, with their own transport adapter), so no two requests are closer than `delay` seconds (arXiv asks for
at least 3), and through one retry loop (`fetch`). Each paper is cached as one JSON record as soon as it
is fetched, so an interrupted fetch resumes where it stopped and `--offline` runs from the cache alone.

Body text: the first version's PDF (https://export.arxiv.org/pdf/<id>v1, the text as first published in
the window) read with pypdfium2 (PDFium; Apache-2.0/BSD); when it cannot be had the text falls back to
title + abstract and the record says so (`text_source = "abstract"`, `body_note` why).
"""
from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import math
import os
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlencode

import requests

from ..errors import UserError
from .config import MIN_DELAY_S  # arXiv's API terms: one request every three seconds at most
from .texts import Paper, normalize, sha256

log = logging.getLogger(__name__)

DEFAULT_WINDOW_DAYS = 14
CACHE_MAX_CHARS = 50_000       # a record keeps at most this much text (more if --chars asks for more)
API_URL = "https://export.arxiv.org/api/query"
PDF_URL = "https://export.arxiv.org/pdf/{id}v{version}"
MAX_PDF_BYTES = 60 * 2**20
RETRY_STATUSES = {429, 500, 502, 503, 504}
USER_AGENT = "rwkv-bench/0.1 (uncheatable eval; at most one request every 3 s)"

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


def parse_date(text: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"{flag} takes a date as YYYY-MM-DD, got {text!r}") from None


def parse_window(since: str | None, until: str | None, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """Inclusive UTC dates. Default: the 14 days before today (today excluded: it is still filling up)."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    end = parse_date(until, "--until") if until else today - dt.timedelta(days=1)
    start = parse_date(since, "--since") if since else end - dt.timedelta(days=DEFAULT_WINDOW_DAYS - 1)
    if start > end:
        raise UserError(f"--since ({start}) is after --until ({end})")
    return start, end


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


def safe_filename(paper_id: str) -> str:
    """A file name for an id that is safe and reversible: [A-Za-z0-9.-] kept, anything else (the '/' of
    old ids, '_' itself) as _xx hex, a leading '.' escaped too."""
    if not paper_id:
        raise ValueError("empty paper id")
    out = []
    for i, ch in enumerate(paper_id):
        if (ch.isascii() and ch.isalnum()) or ch == "-" or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.extend(f"_{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def id_from_filename(name: str) -> str:
    return re.sub(rb"_([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]),
                  name.encode("ascii")).decode("utf-8")


# ---- cache ----

def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rwkv-bench")) / "uncheatable"


@dataclass
class Record:
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
                     {"version": self.version, "published": self.published, "categories": self.categories})

    @property
    def published_date(self) -> dt.date:
        return dt.datetime.fromisoformat(self.published).astimezone(dt.timezone.utc).date()


class Cache:
    """<root>/arxiv/<safe id>.json, one record per paper, written atomically."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.dir = self.root / "arxiv"

    def path(self, paper_id: str) -> Path:
        return self.dir / (safe_filename(paper_id) + ".json")

    def get(self, paper_id: str) -> Record | None:
        return self.load(self.path(paper_id))

    @staticmethod
    def load(path: Path) -> Record | None:
        """A record, or None if absent or damaged (wrong fields, text not matching its sha256)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            record = Record(**data)
        except (OSError, ValueError, TypeError):
            return None
        if sha256(record.text) != record.sha256 or len(record.text) != record.chars:
            log.warning("cache record %s does not match its checksum; ignoring it", path)
            return None
        return record

    def put(self, record: Record) -> Path:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the cache directory {self.dir}: {exc.strerror}") from None
        path = self.path(record.id)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record.__dict__, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def records(self) -> Iterator[Record]:
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("*.json")):
            if (record := self.load(path)) is not None:
                yield record


def cached_in_window(cache: Cache, since: dt.date, until: dt.date, categories: list[str]) -> list[Record]:
    """Records published in the window (and in one of the categories), newest first."""
    chosen = [r for r in cache.records() if since <= r.published_date <= until
              and (not categories or set(r.categories) & set(categories))]
    return sorted(chosen, key=lambda r: (r.published, r.id), reverse=True)


# ---- HTTP ----

class PoliteSession(requests.Session):
    """A requests session that spaces every request at least `delay` seconds from the previous one and
    sets a user agent and a timeout. Shared by the API pages and the PDF downloads. `transport`, a
    requests transport adapter, replaces the network (tests serve recorded responses through one)."""

    def __init__(self, delay: float = MIN_DELAY_S, timeout: float = 60.0,
                 transport: requests.adapters.BaseAdapter | None = None):
        super().__init__()
        self.delay = delay
        self.timeout = timeout
        self.last_request: float | None = None
        self.requests_made = 0
        self.headers["User-Agent"] = USER_AGENT
        if transport is not None:
            self.mount("https://", transport)
            self.mount("http://", transport)

    def request(self, method, url, *args, **kwargs):
        if self.last_request is not None:
            wait = self.delay - (time.monotonic() - self.last_request)
            if wait > 0:
                time.sleep(wait)
        kwargs.setdefault("timeout", self.timeout)
        try:
            return super().request(method, url, *args, **kwargs)
        finally:
            self.last_request = time.monotonic()
            self.requests_made += 1


class FetchError(Exception):
    """A request that did not give a usable answer: `note` says why, `transient` whether a later try
    may succeed (network errors, 429/5xx) or not (404, not a PDF)."""

    def __init__(self, note: str, transient: bool):
        super().__init__(note)
        self.note, self.transient = note, transient


T = TypeVar("T")


def fetch(session: requests.Session, url: str, retries: int,
          read: Callable[[requests.Response], T] = lambda resp: resp) -> T:
    """GET `url` and `read` the answer, in up to `retries` + 1 tries: network errors, the statuses in
    RETRY_STATUSES (waiting out a Retry-After of up to a minute) and a ValueError from `read` (a
    damaged page) are tried again; another status than 200 is final. Raises FetchError."""
    note = ""
    for attempt in range(retries + 1):
        try:
            resp = session.get(url)
        except requests.RequestException as exc:     # connection, timeout, a body cut short ...
            note = f"network error: {type(exc).__name__}"
            continue
        if resp.status_code in RETRY_STATUSES:
            note = f"HTTP {resp.status_code}"
            retry_after = resp.headers.get("Retry-After", "")
            if retry_after.isdigit() and attempt < retries:
                time.sleep(min(int(retry_after), 60))
            continue
        if resp.status_code != 200:
            raise FetchError(f"HTTP {resp.status_code}", transient=False)
        try:
            return read(resp)
        except ValueError as exc:
            note = str(exc)
    raise FetchError(f"{note} after {retries + 1} tries", transient=True)


def download_pdf(session: requests.Session, url: str, retries: int) -> bytes:
    """The bytes of the PDF at `url`; FetchError when there is none to be had."""
    body = fetch(session, url, retries).content
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


def search_url(since: dt.date, until: dt.date, categories: list[str], start: int, page_size: int) -> str:
    """One page of the query, newest submissions first."""
    return API_URL + "?" + urlencode({"search_query": build_query(since, until, categories),
                                      "sortBy": "submittedDate", "sortOrder": "descending",
                                      "start": str(start), "max_results": str(page_size)})


def parse_feed(content: bytes) -> Feed:
    """An API page; ValueError if it is not Atom. Entries without an id or a date are skipped."""
    try:
        root = ET.fromstring(content)
    except ET.ParseError as exc:
        raise ValueError(f"the API page is not XML ({exc})") from None
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


def list_entries(session: requests.Session, opts: FetchOptions) -> Iterator[Entry]:
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

        feed = fetch(session, search_url(opts.since, opts.until, opts.categories, start, opts.page_size),
                     opts.retries, read)
        yield from feed.entries
        start += len(feed.entries)
        if not feed.entries or start >= feed.total:
            return


# ---- PDF text ----

_HEADING = re.compile(r"^(?:\d+\.?|[IVX]+\.)?\s*(?:Introduction|INTRODUCTION)\s*$")


@dataclass
class Line:
    """One line of text on a page; baselines in PDF units, y upwards."""
    text: str
    first_baseline: float
    last_baseline: float
    size: float


def page_lines(page) -> list[Line]:
    """The horizontal lines of a PDFium page in content order (for TeX PDFs the reading order, columns
    included). Rotated text (the arXiv stamp in the margin) and text outside the page are dropped."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    textpage = page.get_textpage()
    width, height = page.get_size()

    def baseline(index: int) -> float:
        x, y = ctypes.c_double(), ctypes.c_double()
        pdfium_c.FPDFText_GetCharOrigin(textpage, index, x, y)
        return y.value

    def make_line(chars: list[tuple[str, int]]) -> Line | None:
        while chars and chars[-1][0].isspace():
            chars.pop()
        while chars and chars[0][0].isspace():
            chars.pop(0)
        if not chars:
            return None
        first, last = chars[0][1], chars[-1][1]
        angle = pdfium_c.FPDFText_GetCharAngle(textpage, first)
        left, bottom, right, top = textpage.get_charbox(first)
        if abs(math.sin(angle)) > 1e-3 or math.cos(angle) < 0 or right < 0 or left > width or top < 0 \
                or bottom > height:
            return None
        return Line(" ".join("".join(ch for ch, _ in chars).split()), baseline(first), baseline(last),
                    pdfium_c.FPDFText_GetFontSize(textpage, first))

    lines: list[Line] = []
    chars: list[tuple[str, int]] = []
    count = textpage.count_chars()
    for i in range(count + 1):
        code = pdfium_c.FPDFText_GetUnicode(textpage, i) if i < count else ord("\n")
        if code in (ord("\n"), ord("\r")):
            pass
        elif code < 32 or code == 0xFFFE:
            # PDFium joins a line that ends with a hyphen to the next and marks the hyphen (code 2): keep
            # the hyphen and the line break, join_lines decides; other control codes are dropped
            if not pdfium_c.FPDFText_IsHyphen(textpage, i):
                continue
            chars.append(("-", i))
        else:
            chars.append((chr(code), i))
            continue
        if (line := make_line(chars)) is not None:
            lines.append(line)
        chars = []
    return lines


def blocks_of(lines: list[Line]) -> list[list[Line]]:
    """Consecutive lines of one font size, each just below the previous one, make a block (a heading,
    a paragraph); a larger gap, a new size or a jump up (a new column) starts the next."""
    blocks: list[list[Line]] = []
    for line in lines:
        if blocks:
            prev = blocks[-1][-1]
            gap = prev.last_baseline - line.first_baseline
            if abs(prev.size - line.size) < 0.5 and 0 < gap <= 1.6 * line.size:
                blocks[-1].append(line)
                continue
        blocks.append([line])
    return blocks


def pdf_text(data: bytes, max_chars: int) -> str:
    """Reading-order text of a PDF, one block a line: lines of a block joined with hyphenation undone,
    page-number blocks dropped. Stops after the page where `max_chars` is reached. A PDF PDFium cannot
    open raises pypdfium2.PdfiumError."""
    import pypdfium2 as pdfium

    out: list[str] = []
    total = 0
    doc = pdfium.PdfDocument(data)
    try:
        for index in range(len(doc)):
            for block in blocks_of(page_lines(doc[index])):
                text = join_lines([line.text for line in block])
                if text and not text.isdigit():
                    out.append(text)
                    total += len(text) + 1
            if total > max_chars:
                break
    finally:
        doc.close()
    return "\n".join(out)


def join_lines(lines: list[str]) -> str:
    """Lines of a block as one: 'hyphen-' + 'ation' -> 'hyphenation', 'Long-' + 'Context' ->
    'Long-Context', otherwise a space."""
    out = ""
    for line in lines:
        if out.endswith("-") and len(out) > 1 and out[-2].isalnum():
            out = (out[:-1] if out[-2].isalpha() and line[:1].islower() else out) + line
        else:
            out = f"{out} {line}" if out else line
    return out


def body_from_pdf_text(text: str, abstract: str) -> str:
    """The body after the front matter: from an 'Introduction' heading if there is one, else after the
    abstract's last words if found, else the whole text (title and authors included)."""
    blocks = text.split("\n")
    for i, block in enumerate(blocks):
        if _HEADING.match(block):
            return "\n".join(blocks[i:])
    tail = " ".join(abstract.split())[-60:]
    flat = " ".join(text.split())
    if len(tail) >= 20 and (pos := flat.find(tail)) >= 0:
        return flat[pos + len(tail):].strip()
    return text


def compose(title: str, abstract: str, body: str) -> str:
    """The evaluated text: title, abstract, body, separated by blank lines, NFC."""
    parts = [" ".join(title.split()), " ".join(abstract.split()), body.strip()]
    return normalize("\n\n".join(p for p in parts if p))


# ---- fetching ----

@dataclass
class FetchOptions:
    cache: Cache
    since: dt.date
    until: dt.date
    categories: list[str]
    delay: float = MIN_DELAY_S
    page_size: int = 100
    retries: int = 3
    max_chars: int = CACHE_MAX_CHARS


def paper_body(session: requests.Session, paper_id: str, abstract: str, opts: FetchOptions) -> tuple[str, str, bool]:
    """(body text or "", why there is none, whether trying again later may help)."""
    try:
        data = download_pdf(session, PDF_URL.format(id=paper_id, version=1), opts.retries)
    except FetchError as exc:
        return "", exc.note, exc.transient
    try:
        body = body_from_pdf_text(pdf_text(data, opts.max_chars), abstract)
    except Exception as exc:  # noqa: BLE001 - a damaged PDF leaves the paper with its abstract
        return "", f"PDF text extraction failed: {type(exc).__name__}", False
    if len(body.strip()) < 200:
        return "", "the PDF has no extractable text (scanned?)", False
    return body, "", False


def record_from_entry(entry: Entry, session: requests.Session, opts: FetchOptions) -> Record:
    paper_id, latest = split_id(entry.short_id)
    body, note, transient = paper_body(session, paper_id, entry.summary, opts)
    full = compose(entry.title, entry.summary, body)
    text = full[:opts.max_chars]
    return Record(id=paper_id, version=1, title=normalize(entry.title), published=entry.published.isoformat(),
                  categories=list(entry.categories), text_source="pdf" if body else "abstract", chars=len(text),
                  sha256=sha256(text), text=text, body_note=note, retry_body=transient,
                  truncated=len(full) > len(text), latest_version=latest,
                  fetched=dt.datetime.now(dt.timezone.utc).isoformat())


def iter_records(opts: FetchOptions, session: requests.Session | None = None) -> Iterator[tuple[Record, bool]]:
    """Newest first: (record, came from the cache). Cached records are reused (no PDF request) unless their
    body failed for a passing reason or they hold less text than asked; new ones are cached at once.
    `session`: where the requests go (default: a PoliteSession spacing them `opts.delay` apart)."""
    session = session or PoliteSession(opts.delay)
    entries = list_entries(session, opts)
    while True:
        try:
            entry = next(entries)
        except StopIteration:
            return
        except FetchError as exc:
            raise UserError(f"the arXiv API failed ({exc.note}); papers fetched so far are cached: rerun "
                            "later to resume, or use --offline") from None
        try:
            paper_id, _ = split_id(entry.short_id)
        except ValueError:
            log.warning("skipping an entry with an unexpected id: %s", entry.short_id)
            continue
        if not opts.since <= entry.published.date() <= opts.until:
            log.warning("skipping %s: published %s, outside the window", paper_id, entry.published.date())
            continue
        cached = opts.cache.get(paper_id)
        if cached is not None and not cached.retry_body and not (cached.truncated and cached.chars < opts.max_chars):
            yield cached, True
            continue
        record = record_from_entry(entry, session, opts)
        opts.cache.put(record)
        yield record, False
