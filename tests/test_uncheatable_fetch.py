"""arXiv fetching through `requests` and urllib3, against a local server (tests/recorded_http.py) answering
with recorded Atom responses (tests/fixtures/arxiv) and PDFs matplotlib writes here; plus PDF text, the
cache, safe ids, the window of dates."""
from __future__ import annotations

import datetime as dt
import io
import json
import random
import re
import textwrap
import time
import unicodedata
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from recorded_http import CUT, DROP, LocalServer, Reply
from rwkv_bench.cli import main
from rwkv_bench.errors import UserError
from rwkv_bench.uncheatable import settings as settings_module
from rwkv_bench.uncheatable.config import UncheatableConfig
from rwkv_bench.uncheatable.cutoffs import DateRule
from rwkv_bench.uncheatable.gather import gather_source
from rwkv_bench.uncheatable.settings import settle
from rwkv_bench.uncheatable.sources import FetchSettings, Window
from rwkv_bench.uncheatable.sources import arxiv as src
from rwkv_bench.uncheatable.sources import cache as cache_module
from rwkv_bench.uncheatable.sources import pdf_text
from rwkv_bench.uncheatable.sources.http import FetchError, PoliteSession
from rwkv_bench.uncheatable.texts import sha256

FIXTURES = Path(__file__).parent / "fixtures" / "arxiv"
TODAY = dt.date(2025, 1, 15)  # default window: 2025-01-01 .. 2025-01-14
A4 = (595.0, 842.0)           # points

SENTENCES = [
    "The experiments use the same tokenizer and training data for every model, so that differences come from the architecture alone.",
    "We report the mean over three seeds and the standard deviation across them in every table.",
    "Previous work has mostly studied this question at small scale, where the effect is hard to separate from noise.",
    "A second set of experiments varies the length of the inputs while keeping the total amount of computation fixed.",
    "The appendix lists the hyperparameters, which were chosen on a held-out split and never on the test data.",
    "Our analysis suggests that the gains come from the first few layers rather than from the output head.",
    "We also release the scripts used to produce the figures, together with the raw measurements behind them.",
    "Related approaches differ in how they trade memory for speed, and we compare with the strongest of them.",
]


def write_pdf(pages: list[list[tuple[float, float, str, float, float]]]) -> bytes:
    """A PDF from matplotlib: each page a list of (x, y, text, font size, rotation), x and y in points
    from the top-left corner of an A4 page, y the baseline; drawn in the order given."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    out = io.BytesIO()
    with PdfPages(out) as pdf:
        for items in pages:
            fig = Figure(figsize=(A4[0] / 72, A4[1] / 72))
            for x, y, text, size, rotation in items:
                fig.text(x / A4[0], 1 - y / A4[1], text, fontsize=size, rotation=rotation, va="baseline")
            pdf.savefig(fig)
    return out.getvalue()


def make_pdf(title: str, authors: str, abstract: str, seed: int) -> bytes:
    """A small two-page paper as arXiv serves it: front matter, '1 Introduction', wrapped paragraphs with
    one hyphenated break each, page numbers, and the rotated arXiv stamp in the left margin."""
    rng = random.Random(seed)
    paragraphs = [f"This paper is about {title.lower()}. " + " ".join(rng.sample(SENTENCES, 5)) for _ in range(4)]
    pages: list[list] = []
    y = 0.0

    def line(text, size=10.0):
        nonlocal y
        if not pages or y > 780:
            pages.append([(300, 820, str(len(pages) + 1), 10, 0)])                            # page number
            if len(pages) == 1:
                pages[0].append((30, 600, f"arXiv:2501.1000{seed}v1 [cs.CL] 14 Jan 2025", 10, 90))
            y = 60.0
        pages[-1].append((72, y, text, size, 0))
        y += size * 1.4

    def paragraph(text):
        nonlocal y
        lines = textwrap.wrap(text, 88)
        if len(lines) > 1:  # hyphenate the first word of the second line across the break
            first, _, rest = lines[1].partition(" ")
            if len(first) >= 6 and first.isalpha():
                lines[0] += " " + first[:3] + "-"
                lines[1] = first[3:] + (" " + rest if rest else "")
        for ln in lines:
            line(ln)
        y += 8

    line(title, 14)
    line(authors)
    y += 10
    line("Abstract", 11)
    paragraph(" ".join(abstract.split()))
    line("1 Introduction", 11)
    for p in paragraphs:
        paragraph(p)
    return write_pdf(pages)


class FakeArxiv:
    """Stands in for export.arxiv.org: API pages by `start`, PDFs by id. `api_status` / `pdf_status` hold
    status codes (or DROP) to answer first (e.g. [503] then the real answer)."""

    def __init__(self, pages=None, pdfs=None, api_status=None, pdf_status=None):
        self.pages = pages if pages is not None else {s: (FIXTURES / f"page_{s}.xml").read_bytes() for s in (0, 2, 4)}
        self.pdfs = pdfs or {}
        self.api_status = api_status or {}
        self.pdf_status = pdf_status or {}
        self.server: LocalServer | None = None

    def __call__(self, path: str) -> Reply:
        url = urlparse(path)
        if url.path == "/api/query":
            start = int(parse_qs(url.query)["start"][0])
            queue = self.api_status.get(start, [])
            if queue:
                return Reply(queue.pop(0), b"<html>Service Unavailable</html>", content_type="text/html")
            return Reply(200, self.pages.get(start, (FIXTURES / "empty.xml").read_bytes()),
                         content_type="application/atom+xml")
        assert url.path.startswith("/pdf/"), path
        key = url.path.removeprefix("/pdf/")
        queue = self.pdf_status.get(key, [])
        if queue:
            status = queue.pop(0)
            return Reply(body=status) if status in (DROP, CUT) else Reply(status, b"busy", content_type="text/plain")
        if key not in self.pdfs:
            return Reply(404, b"not found", content_type="text/html")
        return Reply(200, self.pdfs[key], content_type="application/pdf")

    @property
    def log(self) -> list[str]:
        return self.server.log

    @property
    def times(self) -> list[float]:
        return self.server.times

    def api_calls(self):
        return [u for u in self.log if "/api/query" in u]

    def pdf_calls(self):
        return [urlparse(u).path.removeprefix("/pdf/") for u in self.log if "/pdf/" in u]


@pytest.fixture
def serve(monkeypatch):
    """serve(fake) -> fake, answering on a local server the arXiv source is pointed at."""
    servers = []

    def start(fake: FakeArxiv) -> FakeArxiv:
        fake.server = LocalServer(fake).__enter__()
        servers.append(fake.server)
        monkeypatch.setenv("RWKV_BENCH_ARXIV_URL", fake.server.url)
        return fake

    yield start
    for server in servers:
        server.__exit__()


def all_pdfs():
    entries = {"2501.10005": ("Sparse Recurrent Memory for Long-Context Language Models", 5),
               "2501.10004": ("A Benchmark of Multilingual Code Summarisation", 4),
               "2501.10002": ("Stabilite des equations de transport", 2),
               "2501.10001": ("Robust Visual Place Recognition under Seasonal Change", 1)}
    abstracts = {}
    for s in (0, 2, 4):
        for entry in src.parse_feed((FIXTURES / f"page_{s}.xml").read_bytes()).entries:
            abstracts[src.split_id(entry.short_id)[0]] = entry.summary
    return {f"{pid}v1": make_pdf(title, "A. Author and B. Author", abstracts[pid], seed)
            for pid, (title, seed) in entries.items()}


@pytest.fixture(scope="module")
def pdfs():
    return all_pdfs()


@pytest.fixture
def fake(serve, pdfs):
    return serve(FakeArxiv(pdfs=dict(pdfs)))


def options(tmp_path, **kw):
    base = dict(models="rwkv4-tiny", papers=5, cache_dir=tmp_path / "cache", delay=0.0, page_size=2, retries=2,
                progress=False, today=TODAY)
    base.update(kw)
    return UncheatableConfig(**base)


def gather_arxiv(config: UncheatableConfig):
    """The arXiv source's texts as a run gathers them, with the test's delay (below the CLI's floor of 3 s)."""
    st = settle(UncheatableConfig(**{**config.__dict__, "delay": 3.0}))
    st.fetch.delay = config.delay
    return gather_source(st, "arxiv")


def fetch_settings(tmp_path, **kw) -> FetchSettings:
    return FetchSettings(**{"cache_dir": tmp_path, "delay": 0.0, "page_size": 2, "retries": 0,
                            "max_chars": 50_000, **kw})


WINDOW = Window(dt.date(2025, 1, 1), dt.date(2025, 1, 14))


# ---- fetching ----

def test_fetch_pages_retry_fallback_and_cache(tmp_path, fake):
    fake.api_status = {2: [503]}            # the second page fails once, then succeeds
    fake.pdf_status = {"2501.10004v1": [503]}
    papers, info = gather_arxiv(options(tmp_path))

    # newest first; 2501.10003 has no PDF -> title + abstract only -> shorter than 2000 chars -> skipped
    assert [p.paper_id for p in papers] == ["2501.10005", "2501.10004", "2501.10002", "2501.10001"]
    assert info["shortfall"] == 1 and info["dropped"]["too_short"] == ["2501.10003"]
    assert all(p.text_source == "pdf" and len(p.text) >= 2000 for p in papers)
    assert all(len(p.text) <= 5000 for p in papers)

    # three pages, the second asked twice; the query is the date window, newest first, pages of 2
    api = fake.api_calls()
    starts = [int(parse_qs(urlparse(u).query)["start"][0]) for u in api]
    assert starts == [0, 2, 2, 4]
    q = parse_qs(urlparse(api[0]).query)
    assert q["search_query"] == ["submittedDate:[202501010000 TO 202501142359]"]
    assert q["sortBy"] == ["submittedDate"] and q["sortOrder"] == ["descending"] and q["max_results"] == ["2"]
    # the first version's PDF of every paper; the 503 retried
    assert fake.pdf_calls() == ["2501.10005v1", "2501.10004v1", "2501.10004v1", "2501.10003v1",
                                "2501.10002v1", "2501.10001v1"]

    cache = cache_module.Cache(tmp_path / "cache", "arxiv", src.ArxivRecord)
    rec = cache.get("2501.10003")
    assert rec.text_source == "abstract" and "404" in rec.body_note and not rec.retry_body
    assert rec.text.startswith("Notes on Improved Lattice Actions\n\nWe summarise")
    rec = cache.get("2501.10004")
    assert rec.version == 1 and rec.latest_version == 2 and rec.categories == ["cs.SE", "cs.CL"]
    assert rec.published.startswith("2025-01-13T09:12:44")
    assert rec.sha256 == sha256(rec.text) and rec.chars == len(rec.text)


def test_pdf_text_is_clean(tmp_path, fake):
    papers, _ = gather_arxiv(options(tmp_path, papers=1))
    text = papers[0].text
    title, abstract, body = text.split("\n\n", 2)
    assert title == "Sparse Recurrent Memory for Long-Context Language Models"
    assert abstract.startswith("Recurrent language models keep a fixed-size state") and "\n" not in abstract
    assert body.startswith("1 Introduction\nThis paper is about sparse recurrent memory")
    assert "arXiv:2501" not in text                       # rotated margin stamp dropped
    assert "\n1\n" not in text and "\n2\n" not in text   # page numbers dropped
    assert "-\n" not in body and " ex- " not in body
    for sentence in SENTENCES:                             # hyphenated words joined back
        if sentence[:40] in body:
            assert sentence in body.replace("\n", " ")


def test_nfc(tmp_path, fake):
    papers, _ = gather_arxiv(options(tmp_path, papers=3))
    french = papers[2]
    assert french.paper_id == "2501.10002"
    assert unicodedata.is_normalized("NFC", french.text)
    assert french.title == unicodedata.normalize("NFC", "Stabilite\u0301 des e\u0301quations de transport non line\u0301aires")
    assert "Stabilité" in french.text


def test_resume_skips_cached_papers(tmp_path, fake):
    first, _ = gather_arxiv(options(tmp_path, papers=2))
    assert [p.paper_id for p in first] == ["2501.10005", "2501.10004"]
    assert len(fake.api_calls()) == 1 and fake.pdf_calls() == ["2501.10005v1", "2501.10004v1"]  # stopped early
    fake.log.clear()
    second, _ = gather_arxiv(options(tmp_path, papers=4))
    assert [p.paper_id for p in second] == ["2501.10005", "2501.10004", "2501.10002", "2501.10001"]
    assert fake.pdf_calls() == ["2501.10003v1", "2501.10002v1", "2501.10001v1"]  # only the new ones
    assert [p.text for p in second[:2]] == [p.text for p in first]
    fake.log.clear()
    gather_arxiv(options(tmp_path, papers=4))
    assert fake.pdf_calls() == []


def test_chars_0_keeps_whole_papers_beyond_the_cache_cap(tmp_path, fake, monkeypatch):
    # --chars 0 means whole texts: the cache's usual cap on a record's text must not cut them either
    whole, _ = gather_arxiv(options(tmp_path / "a", papers=1, chars=100000, cache_dir=tmp_path / "a"))
    monkeypatch.setattr(settings_module, "CACHE_MAX_CHARS", 2500)
    papers, _ = gather_arxiv(options(tmp_path / "b", papers=1, chars=0, cache_dir=tmp_path / "b"))
    assert len(whole[0].text) > 2500 and papers[0].text == whole[0].text
    assert not cache_module.Cache(tmp_path / "b", "arxiv", src.ArxivRecord).get(papers[0].paper_id).truncated


def test_transient_pdf_failure_is_retried_on_the_next_run(tmp_path, fake):
    fake.pdf_status = {"2501.10005v1": [503, 503, 503]}   # retries=2: three tries, all fail
    papers, info = gather_arxiv(options(tmp_path, papers=1, min_chars=100))
    assert papers[0].text_source == "abstract"
    rec = cache_module.Cache(tmp_path / "cache", "arxiv", src.ArxivRecord).get("2501.10005")
    assert rec.retry_body and "503" in rec.body_note
    fake.log.clear()
    papers, _ = gather_arxiv(options(tmp_path, papers=1, min_chars=100))
    assert papers[0].text_source == "pdf" and fake.pdf_calls() == ["2501.10005v1"]


def test_categories_in_query(tmp_path, fake):
    gather_arxiv(options(tmp_path, papers=1, categories="cs.CL,cs.LG", since="2025-01-10", until="2025-01-14"))
    q = parse_qs(urlparse(fake.api_calls()[0]).query)["search_query"][0]
    assert q == "(cat:cs.CL OR cat:cs.LG) AND submittedDate:[202501100000 TO 202501142359]"


def test_empty_result(tmp_path, fake):
    fake.pages = {}
    with pytest.raises(UserError, match="no usable papers"):
        gather_arxiv(options(tmp_path))
    assert len(fake.log) == 1


def test_empty_result_cli_exit_code(tmp_path, fake, capsys):
    fake.pages = {}
    code = main(["uncheatable", "--models", "rwkv4-tiny", "--papers", "3", "--cache-dir", str(tmp_path),
                 "--since", "2025-01-01", "--until", "2025-01-14", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: arXiv lists no usable papers") and "\n" not in err


def test_api_down_gives_user_error(tmp_path, fake):
    fake.api_status = {0: [503] * 10}
    with pytest.raises(UserError, match="arXiv API failed.*HTTP 503"):
        gather_arxiv(options(tmp_path))
    assert len(fake.api_calls()) == 3   # one try + two retries


def test_offline_uses_only_the_cache(tmp_path, fake, monkeypatch, capsys):
    gather_arxiv(options(tmp_path, papers=5))
    fake.log.clear()
    papers, info = gather_arxiv(options(tmp_path, papers=10, offline=True))
    assert fake.log == []
    assert [p.paper_id for p in papers] == ["2501.10005", "2501.10004", "2501.10002", "2501.10001"]
    assert info["shortfall"] == 6
    assert "cache holds only 4 usable arXiv texts" in capsys.readouterr().err.replace("\n", " ")
    only_cv, _ = gather_arxiv(options(tmp_path, papers=10, offline=True, categories="cs.CV"))
    assert [p.paper_id for p in only_cv] == ["2501.10001"]
    window, _ = gather_arxiv(options(tmp_path, papers=10, offline=True, since="2025-01-11", until="2025-01-13"))
    assert [p.paper_id for p in window] == ["2501.10004"]
    with pytest.raises(UserError, match="holds no usable arXiv texts"):
        gather_arxiv(options(tmp_path, offline=True, cache_dir=tmp_path / "empty-cache"))


def test_polite_session_spaces_requests(tmp_path, serve, pdfs):
    server = serve(FakeArxiv(pdfs=dict(pdfs)))
    session = PoliteSession(0.2, retries=0)        # the session is passed in
    source = src.ArxivSource(fetch_settings(tmp_path, delay=0.2), session)
    records = [r for r, _ in source.records(WINDOW)]
    assert len(records) == 5 and session.requests_made == len(server.log) == 8  # 3 pages + 5 PDFs
    gaps = [b - a for a, b in zip(server.times, server.times[1:])]
    assert min(gaps) >= 0.19


def test_empty_or_damaged_later_page_is_asked_again(tmp_path, serve):
    """arXiv sometimes answers a later page with no entries, or cut short: the page is asked again."""
    page_2 = (FIXTURES / "page_2.xml").read_bytes()
    answers = [(FIXTURES / "empty.xml").read_bytes(), page_2[:500], page_2]

    class Flaky(FakeArxiv):
        def __call__(self, path):
            if parse_qs(urlparse(path).query)["start"] == ["2"]:
                self.pages[2] = answers.pop(0)
            return super().__call__(path)

    server = serve(Flaky())
    session = PoliteSession(0.0, retries=0)
    entries = list(src.list_entries(session, server.server.url, WINDOW, [], 2, tries=3))
    assert [e.short_id for e in entries] == ["2501.10005v1", "2501.10004v2", "2501.10003v1", "2501.10002v1",
                                             "2501.10001v1"]
    assert answers == [] and len(server.api_calls()) == 5
    with pytest.raises(ValueError, match="not XML"):
        src.parse_feed(page_2[:500])


def test_network_errors_are_retried(serve, pdfs):
    """A dropped connection is retried by urllib3; a body cut short by our loop."""
    server = serve(FakeArxiv(pdfs=dict(pdfs), pdf_status={"2501.10005v1": [DROP, CUT]}))
    url = f"{server.server.url}/pdf/2501.10005v1"
    assert src.download_pdf(PoliteSession(0.0, retries=2), url) == pdfs["2501.10005v1"]
    assert server.pdf_calls() == ["2501.10005v1"] * 3
    server.pdf_status["2501.10005v1"] = [DROP]
    with pytest.raises(FetchError, match="network error: ConnectionError") as err:
        src.download_pdf(PoliteSession(0.0, retries=0), url)
    assert err.value.transient


def test_429_waits_out_retry_after(serve, pdfs):
    server = serve(FakeArxiv(pdfs=dict(pdfs)))
    answers = [Reply(429, b"slow down", {"Retry-After": "1"})]
    plain = server.__class__.__call__
    server.server.app = lambda path: answers.pop(0) if answers else plain(server, path)
    started = time.monotonic()
    body = src.download_pdf(PoliteSession(0.0, retries=1), f"{server.server.url}/pdf/2501.10005v1")
    assert body == pdfs["2501.10005v1"] and len(server.log) == 2
    assert server.times[1] - server.times[0] >= 0.95 and time.monotonic() - started < 10


def test_default_delay_is_polite():
    assert src.ArxivSource.min_delay >= 3 and UncheatableConfig().delay is None
    assert src.ArxivSource(fetch_settings(Path("."), delay=None)).session.delay >= 3


def test_delay_below_three_seconds_rejected(tmp_path, capsys):
    code = main(["uncheatable", "--models", "rwkv4-tiny", "--delay", "1", "--cache-dir", str(tmp_path)])
    assert code == 2 and "at least 3" in capsys.readouterr().err


# ---- PDF text (PDFium) ----

def test_pdf_text_whole_and_in_reading_order():
    """Two pages; page 1 has its page number and the rotated stamp drawn first and two columns side by
    side; page 2 a paragraph with hyphenated line breaks."""
    left = [f"Left column line {i} of the first page." for i in range(4)]
    right = [f"Right column line {i} of the first page." for i in range(4)]
    page_1 = [(300, 820, "1", 10, 0), (30, 600, "arXiv:2501.10009v1 [cs.CL] 14 Jan 2025", 10, 90),
              (72, 60, "A Title on Top", 14, 0)]
    page_1 += [(72, 100 + 14 * i, line, 10, 0) for i, line in enumerate(left)]
    page_1 += [(320, 100 + 14 * i, line, 10, 0) for i, line in enumerate(right)]
    second = ["The second page starts with a hyphen-", "ated word, a Long-", "Context model, café and naïve."]
    page_2 = [(72, 60 + 14 * i, line, 10, 0) for i, line in enumerate(second)] + [(300, 820, "2", 10, 0)]
    pdf = write_pdf([page_1, page_2])

    text = pdf_text.pdf_text(pdf, 10_000)
    assert text.split("\n") == ["A Title on Top", " ".join(left), " ".join(right),
                                "The second page starts with a hyphenated word, a Long-Context model, café and naïve."]
    assert pdf_text.pdf_text(pdf, 50).split("\n") == ["A Title on Top", " ".join(left), " ".join(right)]  # page 1 only


@pytest.mark.parametrize("damage, note", [
    ("random bytes", "PDF text extraction failed: PdfiumError"),
    ("truncated", "PDF text extraction failed: PdfiumError"),
    ("html", "the response is not a PDF"),
])
def test_unreadable_pdf_falls_back_to_abstract(tmp_path, serve, pdfs, damage, note):
    good = pdfs["2501.10005v1"]
    bad = {"random bytes": b"%PDF-1.7\n" + random.Random(0).randbytes(5000), "truncated": good[:len(good) // 2],
           "html": b"<html>Please wait</html>"}[damage]
    server = serve(FakeArxiv(pdfs={**pdfs, "2501.10005v1": bad}))
    source = src.ArxivSource(fetch_settings(tmp_path, retries=1))
    records = {r.id: r for r, _ in source.records(WINDOW)}
    rec = records["2501.10005"]
    assert rec.text_source == "abstract" and rec.body_note == note and not rec.retry_body
    entry = src.parse_feed((FIXTURES / "page_0.xml").read_bytes()).entries[0]
    assert rec.text == src.compose(entry.title, entry.summary, "")           # title + abstract, nothing else
    assert source.cache.get("2501.10005") == rec
    assert records["2501.10004"].text_source == "pdf"                          # decided per paper
    assert server.pdf_calls().count("2501.10005v1") == 1                       # a damaged PDF is not asked again


def test_no_agpl_pdf_library_is_imported():
    package = Path(src.__file__).parents[1]
    for path in package.rglob("*.py"):
        assert not re.search(r"^\s*(?:import|from)\s+(?:pymupdf|fitz)\b", path.read_text(encoding="utf-8"), re.M), path


# ---- ids, cache, inputs ----

@pytest.mark.parametrize("pid", ["2501.01234", "hep-th/9901001", "math.GT/0309136", "a_b", ".hidden", "ü/x"])
def test_safe_filename(pid):
    name = cache_module.safe_filename(pid)
    assert "/" not in name and "\\" not in name and not name.startswith(".") and name.isascii()
    undo = re.sub(rb"_([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), name.encode()).decode()
    assert undo == pid                      # reversible, hence one file per id


def test_safe_filenames_are_distinct():
    ids = ["hep-th/9901001", "hep-th_9901001", "hep-th_2f9901001", "2501.01234", "2501.01234v1"]
    assert len({cache_module.safe_filename(i) for i in ids}) == len(ids)


def test_split_id():
    assert src.split_id("2501.01234v2") == ("2501.01234", 2)
    assert src.split_id("0704.0001") == ("0704.0001", None)
    assert src.split_id("hep-th/9901001v1") == ("hep-th/9901001", 1)
    assert src.split_id("math.GT/0309136v3") == ("math.GT/0309136", 3)
    with pytest.raises(ValueError):
        src.split_id("../../etc/passwd")


def test_cache_round_trip_old_style_id(tmp_path):
    cache = cache_module.Cache(tmp_path, "arxiv", src.ArxivRecord)
    text = "Title\n\nAbstract " + "x" * 2500
    rec = src.ArxivRecord(id="hep-th/9901001", version=1, title="Title", published="1999-01-01T00:00:00+00:00",
                          categories=["hep-th"], text_source="pdf", chars=len(text), sha256=sha256(text), text=text)
    path = cache.put(rec)
    assert path.parent == tmp_path / "arxiv" and path.name == "hep-th_2f9901001.json"
    assert cache.get("hep-th/9901001") == rec
    assert list(cache.records()) == [rec]
    # a damaged record (text edited) is ignored rather than trusted
    data = json.loads(path.read_text())
    data["text"] = data["text"] + "!"
    path.write_text(json.dumps(data))
    assert cache.get("hep-th/9901001") is None
    path.write_text("{not json")
    assert cache.get("hep-th/9901001") is None and list(cache.records()) == []


def test_default_cache_dir_is_user_cache():
    from platformdirs import user_cache_dir

    assert cache_module.default_cache_dir() == Path(user_cache_dir("rwkv-bench")) / "uncheatable"


def test_categories():
    assert src.parse_categories("cs.CL, cs.LG,cs.CL") == ["cs.CL", "cs.LG"]
    assert src.parse_categories("hep-th,cond-mat.str-el,stat.ML") == ["hep-th", "cond-mat.str-el", "stat.ML"]
    assert src.parse_categories(None) == []
    with pytest.raises(UserError, match="did you mean cs.CL"):
        src.parse_categories("cs.cl")
    with pytest.raises(UserError, match="unknown arXiv category 'cs.XX'"):
        src.parse_categories("cs.XX")


def test_unknown_category_cli(capsys):
    code = main(["uncheatable", "--models", "rwkv4-tiny", "--categories", "cs.CL,bogus.ZZ"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown arXiv category 'bogus.ZZ'" in err and "\n" not in err


def window(since=None, until=None, after=None):
    rule = DateRule(after, "a test's cutoff", {})
    return settings_module.parse_window(UncheatableConfig(since=since, until=until, today=TODAY), rule)


def test_window():
    assert window() == Window(dt.date(2025, 1, 1), dt.date(2025, 1, 14))
    assert window("2024-12-01", "2024-12-31") == Window(dt.date(2024, 12, 1), dt.date(2024, 12, 31))
    with pytest.raises(UserError, match="after --until"):
        window("2025-01-10", "2025-01-01")
    with pytest.raises(UserError, match="YYYY-MM-DD"):
        window("last week")


def test_window_follows_the_training_cutoff():
    """Texts start the day after the latest cutoff: later than the default 14 days when the cutoff is recent,
    and --since before it is refused."""
    assert window(after=dt.date(2025, 1, 9)) == Window(dt.date(2025, 1, 10), dt.date(2025, 1, 14))
    assert window(after=dt.date(2020, 12, 31)) == Window(dt.date(2025, 1, 1), dt.date(2025, 1, 14))
    with pytest.raises(UserError, match="not after 2025-01-09"):
        window("2025-01-05", after=dt.date(2025, 1, 9))
