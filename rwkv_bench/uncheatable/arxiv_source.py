"""New arXiv papers: listing through the `arxiv` package, body text from the PDF (pymupdf), a local cache.

This is the only module of the uncheatable eval that touches the network. Every request (API pages and
PDFs) goes through one rate-limited `requests` session, so no two requests are closer than `delay`
seconds (arXiv asks for at least 3). Each paper is cached as one JSON record as soon as it is fetched,
so an interrupted fetch resumes where it stopped and `--offline` runs from the cache alone.

Body text: the first version's PDF (https://export.arxiv.org/pdf/<id>v1, the text as first published in
the window) through pymupdf; when it cannot be had the text falls back to title + abstract and the
record says so (`text_source = "abstract"`, `body_note` why).
"""
from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import requests

from ..errors import UserError
from .texts import Paper, normalize, sha256

log = logging.getLogger(__name__)

MIN_DELAY_S = 3.0              # arXiv's API terms: no more than one request every three seconds
DEFAULT_WINDOW_DAYS = 14
CACHE_MAX_CHARS = 50_000       # a record keeps at most this much text (more if --chars asks for more)
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
    sets a user agent and a timeout. Shared by the arXiv API client and the PDF downloads."""

    def __init__(self, delay: float = MIN_DELAY_S, timeout: float = 60.0):
        super().__init__()
        self.delay = delay
        self.timeout = timeout
        self.last_request: float | None = None
        self.requests_made = 0
        self.headers["User-Agent"] = USER_AGENT

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


def arxiv_client(session: PoliteSession, page_size: int, retries: int):
    import arxiv

    client = arxiv.Client(page_size=page_size, delay_seconds=session.delay, num_retries=retries)
    client._session = session  # one session for all requests, so the delay holds across API and PDFs
    return client


def download_pdf(session: requests.Session, url: str, retries: int) -> tuple[bytes | None, str, bool]:
    """(pdf bytes or None, a note on failure, whether trying again later may help)."""
    note = ""
    for attempt in range(retries + 1):
        try:
            resp = session.get(url)
        except (requests.ConnectionError, requests.Timeout) as exc:
            note = f"network error: {type(exc).__name__}"
            continue
        if resp.status_code in RETRY_STATUSES:
            note = f"HTTP {resp.status_code}"
            retry_after = resp.headers.get("Retry-After", "")
            if retry_after.isdigit() and attempt < retries:
                time.sleep(min(int(retry_after), 60))
            continue
        if resp.status_code != 200:
            return None, f"HTTP {resp.status_code}", False
        body = resp.content
        if not body.startswith(b"%PDF"):
            return None, "the response is not a PDF", False
        if len(body) > MAX_PDF_BYTES:
            return None, f"PDF larger than {MAX_PDF_BYTES >> 20} MiB", False
        return body, "", False
    return None, f"{note} after {retries + 1} tries", True


# ---- PDF text ----

_STAMP = re.compile(r"^\s*arXiv:\d{4}\.\d{4,5}v\d+")
_HEADING = re.compile(r"^(?:\d+\.?|[IVX]+\.)?\s*(?:Introduction|INTRODUCTION)\s*$")


def pdf_text(data: bytes, max_chars: int) -> str:
    """Reading-order text of a PDF: horizontal lines only (drops the rotated arXiv stamp), lines of a
    block joined with hyphenation undone, page-number blocks dropped. Stops once `max_chars` is reached."""
    import pymupdf

    blocks: list[str] = []
    total = 0
    with pymupdf.open(stream=data, filetype="pdf") as doc:
        for page in doc:
            content = page.get_text("dict", flags=pymupdf.TEXT_MEDIABOX_CLIP, sort=True)
            for block in content["blocks"]:
                lines = [" ".join("".join(s["text"] for s in line["spans"]).split())
                         for line in block.get("lines", []) if abs(line["dir"][1]) < 1e-3 and line["dir"][0] > 0]
                text = join_lines([ln for ln in lines if ln])
                if not text or text.isdigit() or _STAMP.match(text):
                    continue
                blocks.append(text)
                total += len(text) + 1
            if total > max_chars:
                break
    return "\n".join(blocks)


def join_lines(lines: list[str]) -> str:
    out = ""
    for line in lines:
        if not out:
            out = line
        elif out.endswith("-") and len(out) > 1 and out[-2].isalpha() and line[:1].islower():
            out = out[:-1] + line          # "hyphen-" + "ation"
        else:
            out = out + " " + line
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


def record_from_result(result, session: requests.Session, opts: FetchOptions) -> Record:
    paper_id, latest = split_id(result.get_short_id())
    abstract = result.summary or ""
    data, note, transient = download_pdf(session, PDF_URL.format(id=paper_id, version=1), opts.retries)
    body, source = "", "abstract"
    if data is not None:
        try:
            body = body_from_pdf_text(pdf_text(data, opts.max_chars), abstract)
        except Exception as exc:  # noqa: BLE001 - a damaged PDF leaves the paper with its abstract
            note = f"PDF text extraction failed: {type(exc).__name__}"
        else:
            if len(body.strip()) >= 200:
                source = "pdf"
            else:
                note, body = "the PDF has no extractable text (scanned?)", ""
    text = compose(result.title, abstract, body)
    truncated = len(text) > opts.max_chars
    text = text[:opts.max_chars]
    return Record(id=paper_id, version=1, title=normalize(" ".join(result.title.split())),
                  published=result.published.astimezone(dt.timezone.utc).isoformat(),
                  categories=list(result.categories), text_source=source, chars=len(text), sha256=sha256(text),
                  text=text, body_note=note if source == "abstract" else "", retry_body=transient and source != "pdf",
                  truncated=truncated, latest_version=latest, fetched=dt.datetime.now(dt.timezone.utc).isoformat())


def iter_records(opts: FetchOptions, session: PoliteSession | None = None,
                 on_listing: Callable[[int], None] | None = None) -> Iterator[tuple[Record, bool]]:
    """Newest first: (record, came from the cache). Cached records are reused (no PDF request) unless their
    body failed for a passing reason or they hold less text than asked; new ones are cached at once."""
    import arxiv

    session = session or PoliteSession(opts.delay)
    client = arxiv_client(session, opts.page_size, opts.retries)
    search = arxiv.Search(query=build_query(opts.since, opts.until, opts.categories), max_results=None,
                          sort_by=arxiv.SortCriterion.SubmittedDate, sort_order=arxiv.SortOrder.Descending)
    results = client.results(search)
    listed = 0
    while True:
        try:
            result = next(results)
        except StopIteration:
            return
        except (arxiv.ArxivError, requests.RequestException) as exc:
            raise UserError(f"the arXiv API failed ({type(exc).__name__}: {exc}); papers fetched so far are "
                            "cached: rerun later to resume, or use --offline") from None
        listed += 1
        if on_listing:
            on_listing(listed)
        try:
            paper_id, _ = split_id(result.get_short_id())
        except ValueError:
            log.warning("skipping an entry with an unexpected id: %s", result.entry_id)
            continue
        published = result.published.astimezone(dt.timezone.utc).date()
        if not opts.since <= published <= opts.until:
            log.warning("skipping %s: published %s, outside the window", paper_id, published)
            continue
        cached = opts.cache.get(paper_id)
        if cached is not None and not cached.retry_body and not (cached.truncated and cached.chars < opts.max_chars):
            yield cached, True
            continue
        record = record_from_result(result, session, opts)
        opts.cache.put(record)
        yield record, False
