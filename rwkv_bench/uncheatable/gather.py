"""The texts a run scores: from each of its sources (fetched, cached or a file), prepared the same way
(texts.Selector); or, on --resume, the very texts it started on, checked against papers.csv's sha256."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UserError
from . import store
from ..console import progress_bar, warn
from .settings import Settings
from .sources import Source, make_source
from .texts import Paper, Selector, select

LABELS = {"arxiv": "arXiv", "wikipedia": "Wikipedia", "github": "GitHub", "biorxiv": "bioRxiv", "file": "file"}


def take(records, selector: Selector, wanted: int, stats: dict, on_kept=lambda n: None) -> list[Paper]:
    """The first `wanted` usable texts of (record, from_cache) pairs, counting what was seen in `stats`."""
    kept: list[Paper] = []
    for record, cached in records:
        stats["listed"] += 1
        stats["from_cache" if cached else "fetched"] += 1
        stats["abstract_only"] += record.text_source == "abstract"
        if (paper := selector.offer(record.to_paper())) is not None:
            kept.append(paper)
            on_kept(len(kept))
            if len(kept) >= wanted:
                break
    return kept


def gather_file(st: Settings, source: Source) -> tuple[list[Paper], dict]:
    # a user's own file is the evaluation set: a text below the minimum is an error, not a silent skip
    records = [paper for paper, _ in source.records(st.source_window("file"))]
    papers, dropped = select(records, chars=st.chars, min_chars=st.min_chars, short="error", limit=st.papers)
    for dup, first in dropped["duplicates"]:
        warn(f"text {dup} repeats text {first} exactly: dropped")
    for skipped in source.skipped:
        warn(f"{source.path}: text {skipped.id} skipped: {skipped.why}")
    if not papers:
        raise UserError(f"{source.path}: no text left to score ({len(source.skipped)} published before the cutoff)")
    if st.papers and len(papers) < st.papers:
        warn(f"{source.path} holds {len(papers)} distinct texts, fewer than the {st.papers} asked for")
    return papers, {"source": "file", "papers_file": str(Path(source.path).resolve()), "dropped": dropped,
                    "skipped": [dataclasses.asdict(s) for s in source.skipped]}


def gather_fetched(st: Settings, source: Source) -> tuple[list[Paper], dict]:
    window, wanted, name = st.window, st.wanted, LABELS[source.name]
    selector = Selector(chars=st.chars, min_chars=st.min_chars)
    stats = {"listed": 0, "from_cache": 0, "fetched": 0, "abstract_only": 0}
    cats = st.fetch.categories if source.name == "arxiv" else []
    where = f"{window.since}..{window.until}" + (f" in {','.join(cats)}" if cats else "")
    if st.offline:
        kept = take(((record, True) for record in source.cached(window)), selector, wanted, stats)
        if not kept:
            raise UserError(f"--offline: the cache {source.cache.dir} holds no usable {name} texts for {where}; "
                            "run once without --offline to fill it")
        if len(kept) < wanted:
            warn(f"--offline: the cache holds only {len(kept)} usable {name} texts for {where}, "
                 f"fewer than the {wanted} asked for; scoring those")
    else:
        with progress_bar(st.progress) as bar:
            task = bar.add_task(f"fetching {name} texts", total=wanted)
            kept = take(source.records(window), selector, wanted, stats,
                        on_kept=lambda n: bar.update(task, completed=n))
        for skipped in source.skipped:
            warn(f"{name}: {skipped.id} skipped: {skipped.why}")
        if not kept:
            listed = "papers" if source.name == "arxiv" else "texts"
            raise UserError(f"{name} lists no usable {listed} for {where} (listed {stats['listed']}, "
                            f"{len(selector.too_short)} shorter than {st.min_chars} characters)")
        if len(kept) < wanted:
            warn(f"{name} has only {len(kept)} usable texts for {where}, fewer than the {wanted} asked for")
    f = st.fetch
    info = {"source": source.name, "window": {"since": str(window.since), "until": str(window.until)},
            "categories": cats, "cache_dir": str(source.cache.root), "offline": st.offline, "fetch": stats,
            "fetch_settings": {"delay_s": source.delay, "page_size": f.page_size, "retries": f.retries},
            "dropped": selector.dropped(), "shortfall": max(0, wanted - len(kept)),
            "skipped": [dataclasses.asdict(s) for s in source.skipped], **source.describe()}
    return kept, info


def gather_source(st: Settings, name: str, session=None) -> tuple[list[Paper], dict]:
    source = make_source(name, st.fetch, session)
    return gather_file(st, source) if name == "file" else gather_fetched(st, source)


def gather(st: Settings) -> tuple[list[Paper], dict]:
    """Every source's texts, in --sources order; ids prefixed "<source>:" when there are several sources.
    Returns them and, by source, what meta.json records about them."""
    papers, about = [], {}
    for name in st.sources:
        kept, about[name] = gather_source(st, name)
        if len(st.sources) > 1:
            kept = [dataclasses.replace(p, paper_id=f"{name}:{p.paper_id}") for p in kept]
        papers += kept
    return papers, about


def plug_in_of(paper_id: str, sources: list[str]) -> tuple[str, str]:
    """(source, the source's own id) of a paper id as gather wrote it."""
    if len(sources) == 1:
        return sources[0], paper_id
    name, _, own = paper_id.partition(":")
    return name, own


def gather_resumed(st: Settings, run_dir: Path) -> list[Paper]:
    """The texts a run was started on, from the sources' caches (or the file), checked against papers.csv."""
    listed = store.read_papers(run_dir)
    made: dict[str, Source] = {}
    papers = []
    for pid, digest in zip(listed["paper_id"], listed["sha256"]):
        name, own = plug_in_of(pid, st.sources)
        if name not in made:
            made[name] = make_source(name, st.fetch)
        record = made[name].get(own)
        if record is None:
            raise UserError(f"cannot resume {run_dir}: text {pid} is no longer available")
        prepared, _ = select([record.to_paper()], chars=st.chars, min_chars=st.min_chars)
        if not prepared or prepared[0].sha256 != digest:
            raise UserError(f"cannot resume {run_dir}: text {pid} changed since the run started")
        papers.append(dataclasses.replace(prepared[0], paper_id=pid))
    return papers
