"""Every uncheatable option parsed and checked in one place, before any text is fetched or model loaded:
`settle(config)` turns the options as given (config.UncheatableConfig) into the typed `Settings` that the
run loop, the text gathering and the sources take from there on."""
from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..options import canonical_dtype, parse_device, positive, split_list
from ..specs import ModelSpec, parse_models
from .config import DEFAULT_PAPERS, UncheatableConfig
from .cutoffs import DateRule, date_rule
from .sources import CACHE_MAX_CHARS, SOURCES, FetchSettings, Window, make_source
from .sources.arxiv import parse_categories

DEFAULT_WINDOW_DAYS = 14
WHOLE_TEXT = sys.maxsize             # --chars 0: no cut
FETCHED = ("arxiv", "wikipedia", "github", "biorxiv")


@dataclass
class Settings:
    options: UncheatableConfig          # as given: what meta.json stores and a resume merges with
    specs: list[ModelSpec]
    sources: list[str]
    papers: int | None                  # texts per source (None: the default for fetched sources, all of a file)
    chars: int                          # characters kept per text (WHOLE_TEXT for --chars 0)
    min_chars: int
    rule: DateRule                      # the models' training cutoffs and the date texts must follow
    window: Window                      # publication dates kept from fetched sources
    fetch: FetchSettings
    offline: bool
    stride: int | None
    chunk_tokens: int
    device: str
    dtype: str
    tokenizer: str | None
    bootstrap: int
    seed: int
    progress: bool

    @property
    def wanted(self) -> int:
        return self.papers or DEFAULT_PAPERS

    def source_window(self, name: str) -> Window:
        """Fetched sources: the window. A file: only the cutoff applies (dated items after it; undated kept)."""
        if name != "file":
            return self.window
        first = self.rule.after + dt.timedelta(days=1) if self.rule.after else dt.date.min
        return Window(first, dt.date.max)


def parse_date(text: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"{flag} takes a date as YYYY-MM-DD, got {text!r}") from None


def parse_sources(o: UncheatableConfig) -> list[str]:
    names = split_list(o.sources, "--sources") if o.sources else (["file"] if o.papers_file else ["arxiv"])
    for name in names:
        if name not in SOURCES:
            raise UserError(f"unknown source {name!r}: use {', '.join(SOURCES)}")
    if "file" in names and o.papers_file is None:
        raise UserError("--sources file needs --papers-file")
    if o.papers_file is not None and "file" not in names:
        raise UserError(f"--papers-file is the file source: add file to --sources {','.join(names)}")
    if o.papers_file is not None and Path(o.papers_file).is_dir():
        raise UserError(f"--papers-file {o.papers_file} is a directory, not a file")
    if names == ["file"] and (o.offline or o.categories or o.since or o.until):
        raise UserError("--since, --until, --categories and --offline apply to fetched sources, not --papers-file")
    if o.categories and "arxiv" not in names:
        raise UserError("--categories applies to the arxiv source only")
    return names


def parse_window(o: UncheatableConfig, rule: DateRule) -> Window:
    """Inclusive UTC dates. Default: the 14 days before today (today excluded: it is still filling up),
    starting no earlier than the day after the training cutoff."""
    today = o.today or dt.datetime.now(dt.timezone.utc).date()
    until = parse_date(o.until, "--until") if o.until else today - dt.timedelta(days=1)
    after = rule.after + dt.timedelta(days=1) if rule.after else None
    if o.since:
        since = parse_date(o.since, "--since")
        if after and since < after:
            raise UserError(f"--since {since} is not after {rule.after} ({rule.reason}): older texts may be in "
                            "the training data; pass --after to override")
    else:
        since = until - dt.timedelta(days=DEFAULT_WINDOW_DAYS - 1)
        since = max(since, after) if after else since
    if since > until:
        raise UserError(f"--since ({since}) is after --until ({until})")
    return Window(since, until)


def check_char_limits(chars: int, min_chars: int) -> None:
    if chars < 0:
        raise UserError(f"--chars must be positive, or 0 to keep whole texts, got {chars}")
    if min_chars < 1:
        raise UserError(f"--min-chars must be at least 1, got {min_chars}")
    if chars and min_chars > chars:
        raise UserError(f"--min-chars ({min_chars}) is larger than --chars ({chars}): no text could qualify")


def settle(o: UncheatableConfig) -> Settings:
    """The options checked and parsed, in one place; the models' specs parsed once, and checked to be
    reachable (local files, or the hub)."""
    from ..backends import check_reachable

    positive(o.papers, "--papers")
    check_char_limits(o.chars, o.min_chars)
    positive(o.stride, "--stride")
    positive(o.chunk_tokens, "--chunk-tokens", zero_ok=True)
    if o.chunk_tokens and o.stride:
        raise UserError("--chunk-tokens scores independent chunks: --stride (the sliding window) does not apply")
    parse_device(o.device)
    if o.bootstrap < 100:
        raise UserError(f"--bootstrap needs at least 100 resamples, got {o.bootstrap}")
    if o.page_size <= 0 or o.page_size > 2000:
        raise UserError(f"--page-size must be in 1..2000 (the arXiv API's limit), got {o.page_size}")
    positive(o.retries, "--retries", zero_ok=True)
    if o.delay is not None:
        positive(o.delay, "--delay", zero_ok=True)
    sources = parse_sources(o)
    fetched = [s for s in sources if s in FETCHED]
    specs = parse_models(o.models)
    rule = date_rule(specs, parse_date(o.after, "--after") if o.after else None)
    window = parse_window(o, rule)
    fetch = FetchSettings(cache_dir=o.cache_dir, delay=o.delay, retries=o.retries, page_size=o.page_size,
                          max_chars=max(CACHE_MAX_CHARS, o.chars or WHOLE_TEXT),
                          categories=parse_categories(o.categories), wikipedia_lang=o.wikipedia_lang,
                          github_extensions=tuple(split_list(o.github_extensions, "--github-extensions")),
                          papers_file=Path(o.papers_file) if o.papers_file else None)
    for name in fetched:
        source = make_source(name, fetch)  # a source checks its own options (a language code, an extension) here
        if o.delay is not None and o.delay < source.min_delay and not getattr(source, "on_mirror", False):
            raise UserError(f"--delay must be at least {source.min_delay:g} seconds for {name} (its API's terms), "
                            f"got {o.delay:g}")
    check_reachable(specs, hint="pass local models instead, e.g. --models rwkv4-tiny,rwkv7-tiny,smollm2-135m")
    return Settings(options=o, specs=specs, sources=sources, papers=o.papers, chars=o.chars or WHOLE_TEXT,
                    min_chars=o.min_chars, rule=rule, window=window, fetch=fetch, offline=o.offline,
                    stride=o.stride, chunk_tokens=o.chunk_tokens, device=o.device, dtype=canonical_dtype(o.dtype),
                    tokenizer=o.tokenizer, bootstrap=o.bootstrap, seed=o.seed, progress=o.progress)
