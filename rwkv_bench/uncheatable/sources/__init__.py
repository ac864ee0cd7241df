"""Where the uncheatable eval's texts come from: one plug-in per source, one interface.

What `uncheatable` asks of a source (`Source`): the texts published in a window of dates, newest first
where the API allows, each with an id, a date, a title and its text (`records`); the same from its cache
alone (`cached`, for --offline); one text by id (`get`, for --resume). Every source fetches through one
polite session (`http.PoliteSession`: spaced requests, urllib3 retries honouring Retry-After) and caches
each text as soon as it has it (`cache.Cache`), so a fetch that stops resumes where it stopped.

    arxiv      new arXiv papers (API + first-version PDF text)            sources/arxiv.py
    wikipedia  articles created in the window (MediaWiki API, --wikipedia-lang)  sources/wikipedia.py
    github     source files of public repositories created in the window  sources/github.py
    biorxiv    preprints posted in the window (details API + JATS full text)  sources/biorxiv.py
    file       a user's JSON/JSONL file (--papers-file)                    sources/file.py
"""
from __future__ import annotations

from .base import CACHE_MAX_CHARS, SOURCES, FetchSettings, Skipped, Source, Window  # noqa: F401  (the interface)


def make_source(name: str, settings: FetchSettings, session=None) -> Source:
    """The plug-in called `name`, imported only when asked for (each pulls in its own parsing libraries)."""
    if name == "arxiv":
        from .arxiv import ArxivSource as plugin
    elif name == "wikipedia":
        from .wikipedia import WikipediaSource as plugin
    elif name == "github":
        from .github import GithubSource as plugin
    elif name == "biorxiv":
        from .biorxiv import BiorxivSource as plugin
    elif name == "file":
        from .file import FileSource as plugin
    else:
        raise ValueError(f"unknown source {name!r} (known: {', '.join(SOURCES)})")
    return plugin(settings, session)
