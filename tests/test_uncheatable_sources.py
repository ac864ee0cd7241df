"""The Wikipedia, GitHub, bioRxiv and file sources against recorded responses (tests/fixtures/<source>/, JSON
in the shape of each real API) served by a local HTTP server; the happy path and the unhappy ones (429 with
Retry-After, an empty page, a deleted article, a binary file, a malformed date), each a clear line with
nothing lost; training cutoffs; the per-source report; and `rwkv-bench uncheatable --sources ...` end to
end from the installed command, killed and resumed."""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from recorded_http import LocalServer, Reply, file_reply, json_reply
from rwkv_bench.errors import UserError
from rwkv_bench.specs import ModelSpec
from rwkv_bench.uncheatable import report
from rwkv_bench.uncheatable.config import UncheatableConfig
from rwkv_bench.uncheatable.cutoffs import RANDOM, date_rule
from rwkv_bench.uncheatable.gather import gather_source
from rwkv_bench.uncheatable.settings import settle
from rwkv_bench.uncheatable.store import read_papers, read_per_paper

FIXTURES = Path(__file__).parent / "fixtures"
WIKI, GITHUB, BIORXIV = FIXTURES / "wikipedia", FIXTURES / "github", FIXTURES / "biorxiv"
WINDOW = dict(since="2025-01-01", until="2025-01-14")


class Recorded:
    """Every source's API in one app: Wikipedia under /w/api.php, GitHub under /search and /repos, bioRxiv
    under /details and /content. `first[key]`: replies to give before the recorded one (a 429, say)."""

    def __init__(self):
        self.first: dict[str, list[Reply]] = {}
        self.wiki_log = "logevents_{page}.json"
        self.github_search = "search_{page}.json"
        self.biorxiv_details = "details_{cursor}.json"

    def __call__(self, path: str) -> Reply:
        url = urlparse(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        key = self.key(url.path, query)
        if self.first.get(key):
            return self.first[key].pop(0)
        if url.path == "/w/api.php":
            return self.wikipedia(query)
        if url.path.startswith(("/search/", "/repos/")):
            return self.github(url.path, query)
        return self.biorxiv(url.path)

    @staticmethod
    def key(path: str, query: dict) -> str:
        if path == "/w/api.php":
            return f"extract {query['pageids']}" if "pageids" in query else f"log {query.get('lecontinue', 1)}"
        if path == "/search/repositories":
            return f"search {query['page']}"
        return path

    def wikipedia(self, query: dict) -> Reply:
        if query.get("list") == "logevents":
            return file_reply(WIKI / self.wiki_log.format(page=2 if "lecontinue" in query else 1))
        path = WIKI / f"extract_{query['pageids']}.json"
        return file_reply(path) if path.is_file() else json_reply({"query": {"pages": [
            {"pageid": int(query["pageids"]), "missing": True}]}})

    def github(self, path: str, query: dict) -> Reply:
        if path == "/search/repositories":
            return file_reply(GITHUB / self.github_search.format(page=query["page"]))
        parts = path.split("/")              # /repos/<owner>/<repo>/<what>[/<path>]
        owner, repo, what, rest = parts[2], parts[3], parts[4], parts[5:]
        name = "_".join([owner, repo, *rest])
        if what == "license":
            found = GITHUB / f"license_{name}.json"
        else:
            found = GITHUB / f"contents_{name}.json"
            found = found if found.is_file() else GITHUB / f"file_{name}.json"
        return file_reply(found) if found.is_file() else file_reply(GITHUB / "not_found.json", 404)

    def biorxiv(self, path: str) -> Reply:
        if path.startswith("/details/biorxiv/"):
            cursor = path.split("/")[-2]
            return file_reply(BIORXIV / self.biorxiv_details.format(cursor=cursor))
        xml = BIORXIV / f"{path.rsplit('/', 1)[-1].split('.')[-3]}.source.xml"     # .../2025.01.08.<n>.source.xml
        if xml.is_file():
            return Reply(200, xml.read_bytes(), content_type="application/xml")
        return Reply(403, b"<html>Just a moment...</html>", content_type="text/html")   # a bot wall


def point_sources_at(env, url: str) -> None:
    env["RWKV_BENCH_WIKIPEDIA_URL"] = f"{url}/w/api.php"
    env["RWKV_BENCH_GITHUB_URL"] = url
    env["RWKV_BENCH_BIORXIV_URL"] = url
    env["RWKV_BENCH_BIORXIV_SITE_URL"] = url


@pytest.fixture
def api(monkeypatch):
    app = Recorded()
    with LocalServer(app) as server:
        env: dict = {}
        point_sources_at(env, server.url)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        app.server = server
        yield app


def gather(tmp_path, source: str, **kw):
    """A source's texts as a run gathers them, with no delay between requests (the CLI's floor is 1 s)."""
    base = dict(models="rwkv4-tiny", sources=source, papers=5, min_chars=100, cache_dir=tmp_path / "cache",
                delay=1.0, page_size=2, retries=2, progress=False, **WINDOW)
    st = settle(UncheatableConfig(**{**base, **kw}))
    st.fetch.delay = 0.0
    return gather_source(st, source)


def warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# ---- Wikipedia ----

def extract(pageid: int) -> str:
    return json.loads((WIKI / f"extract_{pageid}.json").read_text())["query"]["pages"][0]["extract"]


def test_wikipedia_new_articles_with_a_rate_limit_a_deletion_a_redirect_and_a_bad_date(tmp_path, api, capsys):
    api.first["extract 1005"] = [Reply(429, b'{"error": "slow down"}', {"Retry-After": "1"})]
    papers, info = gather(tmp_path, "wikipedia")
    assert [p.paper_id for p in papers] == ["en:1001", "en:1005", "en:1006"]
    assert [p.text for p in papers] == [unicodedata.normalize("NFC", extract(i).strip()) for i in (1001, 1005, 1006)]
    assert papers[0].title == "First Article" and papers[0].info["published"] == "2025-01-14T09:00:00+00:00"
    assert {p.info["licence"] for p in papers} == {"CC BY-SA 4.0"} and papers[0].source == "wikipedia"
    lines = warnings(capsys)
    said = [line for line in lines if "skipped" in line]
    assert len(said) == 3 and all(line.startswith("warning: Wikipedia: en:") for line in said)
    assert "en:1002 skipped: deleted since it was created" in said[0]
    assert "en:1003 skipped: a malformed creation date '2025-13-45T00:00:00Z'" in said[1]
    assert "en:1004 skipped: no text (a redirect?)" in said[2]
    assert [s["id"] for s in info["skipped"]] == ["en:1002", "en:1003", "en:1004"] and info["shortfall"] == 2
    # the 429 was waited out (Retry-After: 1) and asked again; the log pages followed lecontinue, newest first
    asked = [urlparse(u) for u in api.server.log]
    extracts = [i for i, u in enumerate(asked) if "pageids=1005" in u.query]
    assert len(extracts) == 2 and api.server.times[extracts[1]] - api.server.times[extracts[0]] >= 0.95
    first = parse_qs(asked[0].query)
    assert first["letype"] == ["create"] and first["lenamespace"] == ["0"] and first["ledir"] == ["older"]
    assert first["lestart"] == ["2025-01-14T23:59:59Z"] and first["leend"] == ["2025-01-01T00:00:00Z"]
    logs = [parse_qs(u.query) for u in asked if "list=logevents" in u.query]
    assert len(logs) == 2 and logs[1]["lecontinue"] == ["20250112100000|90000004"]
    # fetched texts are cached: a second gather asks only the log, and --offline asks nothing
    before = len(api.server.log)
    again, _ = gather(tmp_path, "wikipedia")
    assert [p.text for p in again] == [p.text for p in papers]
    assert not any("prop=extracts" in u and "pageids=100" in u and "1002" not in u and "1004" not in u
                   for u in api.server.log[before:])
    before = len(api.server.log)
    offline, _ = gather(tmp_path, "wikipedia", offline=True)
    assert [p.paper_id for p in offline] == ["en:1001", "en:1005", "en:1006"] and len(api.server.log) == before


def test_wikipedia_empty_log_is_one_clear_error(tmp_path, api):
    api.wiki_log = "logevents_empty.json"
    with pytest.raises(UserError, match=r"^Wikipedia lists no usable texts for 2025-01-01..2025-01-14 \(listed 0"):
        gather(tmp_path, "wikipedia")


def test_wikipedia_language_code_is_checked(tmp_path, api):
    with pytest.raises(UserError, match="--wikipedia-lang takes a Wikipedia language code"):
        gather(tmp_path, "wikipedia", wikipedia_lang="en/../x")


# ---- GitHub ----

def content(name: str) -> str:
    return base64.b64decode(json.loads((GITHUB / name).read_text())["content"]).decode()


def test_github_files_licences_and_the_unhappy_repositories(tmp_path, api, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "t0ken")
    api.first["search 2"] = [Reply(429, b'{"message": "secondary rate limit"}', {"Retry-After": "1"})]
    papers, info = gather(tmp_path, "github")
    assert [p.paper_id for p in papers] == ["alice/tiny-tokenizer/tokenizer.py", "dave/model-weights/src/helper.py"]
    assert papers[0].text == content("file_alice_tiny-tokenizer_tokenizer.py.json")
    assert papers[1].text == content("file_dave_model-weights_src_helper.py.json")
    assert [p.info["licence"] for p in papers] == ["MIT", "none"]       # no licence file: said, not guessed
    assert papers[0].info["url"] == "https://github.com/alice/tiny-tokenizer/blob/main/tokenizer.py"
    assert papers[1].info["published"] == "2025-01-11T08:00:00+00:00" and papers[0].text_source == "code"
    said = [line for line in warnings(capsys) if "skipped" in line]
    assert said == ["warning: GitHub: bob/data-tools skipped: a malformed creation date '2025-01-40T08:00:00Z'",
                    "warning: GitHub: carol/forked-lib skipped: a fork (its code predates it)",
                    "warning: GitHub: dave/model-weights/src/weights.py skipped: a binary file"]
    assert info["shortfall"] == 3 and info["token"] is True
    # the token went with every request; the search asked for the window, Python, no forks
    assert all(h.get("Authorization") == "Bearer t0ken" for h in api.server.headers)
    q = parse_qs(urlparse(api.server.log[0]).query)["q"][0]
    assert q == "created:2025-01-01..2025-01-14 language:Python fork:false"
    searches = [u for u in api.server.log if u.startswith("/search/")]
    assert [parse_qs(urlparse(u).query)["page"][0] for u in searches] == ["1", "2", "2", "3"]
    # cached: a second gather fetches no file again
    before = len(api.server.log)
    gather(tmp_path, "github")
    assert not [u for u in api.server.log[before:] if "/contents/" in u and u.endswith(".py")]


def test_github_rate_limit_403_is_a_clear_line(tmp_path, api, capsys):
    api.first["search 1"] = [json_reply({"message": "API rate limit exceeded"}, 403, X_RateLimit_Remaining=0)]
    with pytest.raises(UserError, match="GitHub lists no usable texts"):
        gather(tmp_path, "github")
    said = warnings(capsys)
    assert len(said) == 1 and "HTTP 403" in said[0] and "Set GITHUB_TOKEN" in said[0]


# ---- bioRxiv ----

def test_biorxiv_full_text_abstract_fallback_versions_and_a_bad_date(tmp_path, api, capsys):
    api.first["/details/biorxiv/2025-01-01/2025-01-14/2/json"] = [Reply(429, b"", {"Retry-After": "1"})]
    papers, info = gather(tmp_path, "biorxiv")
    assert [p.paper_id for p in papers] == ["10.1101/2025.01.08.631001", "10.1101/2025.01.07.631002"]
    full, abstract = papers
    assert full.text_source == "fulltext" and abstract.text_source == "abstract"
    assert full.text.startswith("Sleep spindles gate next-day spatial memory in mice\n\nSleep spindles are bursts")
    assert "\n\nIntroduction\nMemory consolidation during sleep" in full.text
    assert "Spindle density rose by a third after learning (p < 0.01)" in full.text
    assert "not body text" not in full.text                     # the reference list is not the body
    assert abstract.text.count("\n\n") == 1                      # title + abstract only, and the row says so
    rows = pd.DataFrame([p.row() for p in papers])
    assert list(rows["text_source"]) == ["fulltext", "abstract"] and set(rows["licence"]) == {"cc_by"}
    from rwkv_bench.uncheatable.sources.biorxiv import BiorxivSource
    from rwkv_bench.uncheatable.sources.cache import Cache, Record

    record = Cache(tmp_path / "cache", "biorxiv", Record).get("10.1101/2025.01.07.631002")
    assert record.note == "full text: HTTP 403" and not record.retry_text and BiorxivSource.name == "biorxiv"
    said = [line for line in warnings(capsys) if "skipped" in line]
    assert said == ["warning: bioRxiv: 10.1101/2024.12.20.629003 skipped: version 2: first posted before this "
                    "version's date",
                    "warning: bioRxiv: 10.1101/2025.01.05.631004 skipped: a malformed date '2025/01/06'"]
    details = [u for u in api.server.log if u.startswith("/details/")]
    assert details == ["/details/biorxiv/2025-01-01/2025-01-14/0/json"] + \
        ["/details/biorxiv/2025-01-01/2025-01-14/2/json"] * 2
    assert info["shortfall"] == 3


def test_biorxiv_empty_interval_is_one_clear_error(tmp_path, api):
    api.biorxiv_details = "details_empty.json"
    with pytest.raises(UserError, match=r"^bioRxiv lists no usable texts for 2025-01-01..2025-01-14"):
        gather(tmp_path, "biorxiv")


# ---- the file source, dates and cutoffs ----

def spec(text: str, random_weights: bool = False) -> ModelSpec:
    return ModelSpec(text, "hub", None, text, random_weights=random_weights, has_tokenizer=True)


def test_the_date_follows_the_latest_training_cutoff():
    pile = date_rule([spec("RWKV/rwkv-4-169m-pile"), spec("EleutherAI/pythia-160m")], None)
    assert pile.after == dt.date(2020, 12, 31) and "arXiv:2101.00027" in pile.models["EleutherAI/pythia-160m"]
    mixed = date_rule([spec("RWKV/rwkv-4-169m-pile"), spec("smollm2-135m"), spec("rwkv4-tiny", True)], None)
    assert mixed.after == dt.date(2024, 12, 31) and "smollm2-135m, 2024-12-31" in mixed.reason
    assert mixed.models["rwkv4-tiny"] == RANDOM
    unknown = date_rule([spec("EleutherAI/pythia-160m"), spec("someone/new-model")], None)
    assert unknown.after == dt.date(2020, 12, 31) and "unknown for someone/new-model" in unknown.reason
    given = date_rule([spec("smollm2-135m")], dt.date(2025, 3, 1))
    assert given.after == dt.date(2025, 3, 1) and given.reason == "--after 2025-03-01"
    assert date_rule([spec("rwkv4-tiny", True)], None).after is None


def test_file_texts_published_before_the_cutoff_are_left_out(tmp_path, capsys):
    text = "A paragraph long enough to be scored on its own. " * 5
    items = [{"text": "old " + text, "published": "2024-06-01", "source": "wikipedia"},
             {"text": "new " + text, "published": "2025-01-05T10:00:00Z", "source": "wikipedia", "title": "New"},
             {"text": "undated " + text, "source": "github"}]
    path = tmp_path / "texts.json"
    path.write_text(json.dumps(items))
    papers, info = gather(tmp_path, "file", papers_file=path, after="2024-12-31", since=None, until=None)
    assert [(p.paper_id, p.source, p.title) for p in papers] == [("1", "wikipedia", "New"), ("2", "github", "")]
    assert "text 0 skipped: published 2024-06-01, not after the models' training cutoff" in capsys.readouterr().err
    assert info["skipped"] == [{"id": "0", "why": "published 2024-06-01, not after the models' training cutoff"}]
    items[0]["published"] = "June 2024"
    path.write_text(json.dumps(items))
    with pytest.raises(UserError, match="item 0 has a malformed date 'June 2024'"):
        gather(tmp_path, "file", papers_file=path, since=None, until=None)


@pytest.mark.parametrize("args, message", [
    (dict(sources="arxiv,gopher"), "unknown source 'gopher'"),
    (dict(sources="file"), "--sources file needs --papers-file"),
    (dict(sources="wikipedia", delay=0.5), "--delay must be at least 1 seconds for wikipedia"),
    (dict(sources="wikipedia", delay=-1.0), "--delay must be zero or more"),
    (dict(sources="wikipedia", categories="cs.CL"), "--categories applies to the arxiv source only"),
    (dict(sources="github", github_extensions=".xyz"), "no GitHub language for '.xyz'"),
    (dict(sources="wikipedia", chunk_tokens=-1), "--chunk-tokens must be zero or more"),
    (dict(models="smollm2-135m", sources="wikipedia", since="2024-06-01"), "--since 2024-06-01 is not after 2024-12-31"),
])
def test_bad_source_options_are_one_line(args, message):
    base = dict(models="rwkv4-tiny", progress=False)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        settle(UncheatableConfig(**{**base, **args}))


def test_a_mirror_sets_its_own_pace(monkeypatch):
    """min_delay is the public API's terms: pointed at a mirror, --delay may go below it (not below 0)."""
    base = dict(models="rwkv4-tiny", progress=False, sources="wikipedia", delay=0.0)
    with pytest.raises(UserError, match="--delay must be at least 1 seconds for wikipedia"):
        settle(UncheatableConfig(**base))
    monkeypatch.setenv("RWKV_BENCH_WIKIPEDIA_URL", "http://127.0.0.1:9/")
    assert settle(UncheatableConfig(**base)).fetch.delay == 0.0


# ---- the report, per source ----

def test_report_ranks_the_models_within_each_source(tmp_path):
    """b is better on code, a on articles: the per-source tables say so, the overall table cannot."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "meta.json").write_text(json.dumps({
        "kind": "uncheatable", "model_specs": ["a", "b"], "device": "cpu", "dtype": "float32",
        "bootstrap": {"resamples": 200, "seed": 0, "level": 0.95}, "source": "wikipedia,github",
        "sources": {"wikipedia": {"window": {"since": "2025-01-01", "until": "2025-01-14"}, "lang": "en"},
                    "github": {"window": {"since": "2025-01-01", "until": "2025-01-14"}}},
        "after": {"date": "2024-12-31", "reason": "the latest training cutoff of the models compared: b, 2024-12-31"}}))
    rows = []
    for source, (a, b) in (("wikipedia", (0.9, 1.1)), ("github", (1.4, 1.0))):
        for i in range(6):
            for model, v in (("a", a + i / 100), ("b", b + i / 90)):
                rows.append({"model": model, "paper_id": f"{source}:{i}", "source": source, "tokens": 100,
                             "bytes": 1000, "chars": 1000, "logprob_nats": -v * 1000 * 0.6931471805599453,
                             "bits_per_byte": v, "bits_per_char": v, "compression_rate_pct": v / 8 * 100,
                             "seconds": 1.0, "random_weights": False})
    pd.DataFrame(rows).to_csv(run_dir / "per_paper.csv", index=False)
    written = {p.name for p in report.render(run_dir)}
    assert {"summary_by_source.csv", "pairwise_by_source.csv", "bits_per_byte_by_source.png"} <= written
    by = pd.read_csv(run_dir / "summary_by_source.csv")
    assert list(zip(by.source, by.model, by["rank"])) == [("wikipedia", "a", 1), ("wikipedia", "b", 2),
                                                         ("github", "b", 1), ("github", "a", 2)]
    assert by.compression_rate_pct.round(6).tolist() == (by.mean_bits_per_byte / 8 * 100).round(6).tolist()
    md = (run_dir / "summary.md").read_text()
    assert "## By source" in md and "| github | 1 | b | 6 |" in md.replace("  ", " ")
    assert "Texts published after 2024-12-31: the latest training cutoff of the models compared" in md
    assert "Wikipedia (en) 2025-01-01..2025-01-14; GitHub 2025-01-01..2025-01-14" in md
    pairs = pd.read_csv(run_dir / "pairwise_by_source.csv")
    assert (pairs.set_index("source").mean_diff_bits_per_byte.apply(lambda x: x > 0)
            .to_dict() == {"wikipedia": False, "github": True})


# ---- end to end: the installed command, every source, killed and resumed ----

@pytest.mark.slow
def test_every_source_from_the_installed_command_killed_and_resumed(tmp_path):
    from test_uncheatable_fetch import FakeArxiv, all_pdfs

    arxiv, others = FakeArxiv(pdfs=all_pdfs()), Recorded()

    def app(path: str) -> Reply:
        return arxiv(path) if path.startswith(("/api/query", "/pdf/")) else others(path)

    text = "A text of the user's own, long enough to be scored after its cutoff. " * 4
    (tmp_path / "mine.json").write_text(json.dumps([{"text": text, "published": "2025-01-03"}]))
    out = tmp_path / "run"
    with LocalServer(app) as server:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RWKV_BENCH_ARXIV_URL": server.url}
        env.pop("GITHUB_TOKEN", None)
        point_sources_at(env, server.url)
        cli = [str(Path(sys.executable).parent / "rwkv-bench"), "uncheatable",
               "--sources", "arxiv,wikipedia,github,biorxiv,file", "--papers-file", str(tmp_path / "mine.json"),
               "--models", "rwkv4-tiny,llama-tiny", "--papers", "2", "--min-chars", "100", "--chars", "400",
               "--since", "2025-01-01", "--until", "2025-01-14", "--after", "2024-12-31",
               "--cache-dir", str(tmp_path / "cache"), "--page-size", "2", "--retries", "1", "--bootstrap", "200",
               "--delay", "0", "--out", str(out), "--no-progress"]   # a mirror: no politeness floor
        killed = subprocess.run(cli, env={**env, "RWKV_BENCH_TEST_DIE_AFTER": "5", "RWKV_BENCH_TEST_DIE_RANK": "0"},
                                capture_output=True, text=True, timeout=300)
        assert killed.returncode != 0 and "killed by RWKV_BENCH_TEST_DIE_AFTER=5" in killed.stderr
        before = (out / "per_paper.csv").read_text().splitlines()
        asked = len(server.log)
        resumed = subprocess.run([*cli[:2], "--resume", "--out", str(out), "--no-progress"], env=env,
                                 capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert len(server.log) == asked                      # the resume fetched nothing: the caches hold it all
    papers = read_papers(out)
    assert list(papers.source) == ["arxiv"] * 2 + ["wikipedia"] * 2 + ["github"] * 2 + ["biorxiv"] * 2 + ["file"]
    assert papers.paper_id[0].startswith("arxiv:2501.") and papers.paper_id[8] == "file:0"
    rows = read_per_paper(out / "per_paper.csv")
    assert len(rows) == 18 and not rows.duplicated(["model", "paper_id"]).any()
    assert (out / "per_paper.csv").read_text().splitlines()[:len(before)] == before   # nothing lost or redone
    by = pd.read_csv(out / "summary_by_source.csv")
    assert sorted(set(by.source)) == ["arxiv", "biorxiv", "file", "github", "wikipedia"]
    assert set(by["rank"]) <= {1, 2} and len(by) == 10
    md = (out / "summary.md").read_text()
    assert "## By source" in md and "Texts published after 2024-12-31: --after 2024-12-31" in md
    assert (out / "bits_per_byte_by_source.png").is_file() and (out / "token_logprobs.npz").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["completed"] and set(meta["sources"]) == {"arxiv", "wikipedia", "github", "biorxiv", "file"}
    assert meta["sources"]["github"]["skipped"][0]["id"] == "bob/data-tools" and len(meta["resumes"]) == 1
