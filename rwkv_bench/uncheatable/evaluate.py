"""The uncheatable eval's run loop: gather texts, score them under every model, write rows as they come.

A run directory holds meta.json (kind "uncheatable"), papers.csv (what was scored: ids, sha256 of the
scored text, source), per_paper.csv (one row per model and paper, appended and fsynced as soon as the
paper is scored) and the tables and figures `report.render` makes from those. `--resume` continues a run:
the same texts (checked by sha256) and no (model, paper) pair scored twice.
"""
from __future__ import annotations

import datetime as dt
import gc
import math
import time
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..options import as_dict, canonical_dtype, merge_options, parse_device, parse_dtype, positive
from ..recording import (append_row, finish_meta, open_run, read_meta, read_rows, resume_meta, start_meta,
                         write_json)
from ..specs import parse_models
from . import arxiv_source as src
from .config import DEFAULT_PAPERS, UncheatableConfig
from .texts import Paper, Selector, check_lengths, read_papers_file, select

KIND = "uncheatable"
PER_PAPER_COLUMNS = ["model", "paper_id", "text_source", "tokens", "bytes", "chars", "logprob_nats", "bits",
                     "bits_per_byte", "bits_per_char", "compression_rate_pct", "seconds", "tokens_per_s",
                     "random_weights", "implementation"]
PAPER_COLUMNS = ["paper_id", "text_source", "chars", "bytes", "sha256", "version", "published", "categories",
                 "title"]
RANDOM_WARNING = "{spec} has random weights: its scores say nothing about language-modelling quality"


def console(enabled: bool = True):
    from rich.console import Console

    return Console(stderr=True, quiet=not enabled)


def warn(message: str) -> None:
    from rich.markup import escape

    # soft_wrap: one warning stays one line in a log file; escape: a "[...]" in the message is text, not markup
    console().print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def progress_bar(enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console(), disable=not enabled,
                    transient=False)


# ---- texts ----

def check_options(o: UncheatableConfig) -> list:
    """Every option checked before any text is fetched or model loaded; returns the parsed model specs."""
    from ..backends import check_reachable

    positive(o.papers, "--papers")
    check_lengths(o.chars, o.min_chars)
    positive(o.stride, "--stride")
    parse_device(o.device)
    canonical_dtype(o.dtype)
    if o.delay < src.MIN_DELAY_S:
        raise UserError(f"--delay must be at least {src.MIN_DELAY_S:g} seconds (arXiv's API terms), got {o.delay:g}")
    if o.papers_file is not None and Path(o.papers_file).is_dir():
        raise UserError(f"--papers-file {o.papers_file} is a directory, not a file")
    if o.bootstrap < 100:
        raise UserError(f"--bootstrap needs at least 100 resamples, got {o.bootstrap}")
    if o.papers_file is not None and (o.offline or o.categories or o.since or o.until):
        raise UserError("--since, --until, --categories and --offline apply to arXiv papers, not --papers-file")
    if o.page_size <= 0 or o.page_size > 2000:
        raise UserError(f"--page-size must be in 1..2000 (the arXiv API's limit), got {o.page_size}")
    positive(o.retries, "--retries", zero_ok=True)
    specs = parse_models(o.models)
    check_reachable(specs, hint="pass local models instead, e.g. --models smollm2-135m")
    return specs


def gather_file(o: UncheatableConfig) -> tuple[list[Paper], dict]:
    # a user's own file is the evaluation set: a text below the minimum is an error, not a silent skip
    papers, dropped = select(read_papers_file(o.papers_file), chars=o.chars, min_chars=o.min_chars,
                             short="error", limit=o.papers)
    for dup, first in dropped["duplicates"]:
        warn(f"text {dup} repeats text {first} exactly: dropped")
    if o.papers and len(papers) < o.papers:
        warn(f"{o.papers_file} holds {len(papers)} distinct texts, fewer than the {o.papers} asked for")
    return papers, {"source": "file", "papers_file": str(Path(o.papers_file).resolve()), "dropped": dropped}


def gather_arxiv(o: UncheatableConfig) -> tuple[list[Paper], dict]:
    since, until = src.parse_window(o.since, o.until, o.today)
    wanted = o.papers or DEFAULT_PAPERS
    cache = src.Cache(o.cache_dir)
    categories = src.parse_categories(o.categories)
    opts = src.FetchOptions(cache=cache, since=since, until=until, categories=categories, delay=o.delay,
                            page_size=o.page_size, retries=o.retries, max_chars=max(src.CACHE_MAX_CHARS, o.chars))
    selector = Selector(chars=o.chars, min_chars=o.min_chars)
    kept: list[Paper] = []
    stats = {"listed": 0, "from_cache": 0, "fetched": 0, "abstract_only": 0}
    where = f"{since}..{until}" + (f" in {','.join(categories)}" if categories else "")
    if o.offline:
        for record in src.cached_in_window(cache, since, until, categories):
            if (paper := selector.offer(record.to_paper())) is not None:
                kept.append(paper)
                stats["from_cache"] += 1
                if len(kept) >= wanted:
                    break
        if not kept:
            raise UserError(f"--offline: the cache {cache.dir} holds no usable papers for {where}; "
                            "run once without --offline to fill it")
        if len(kept) < wanted:
            warn(f"--offline: the cache holds only {len(kept)} usable papers for {where}, "
                 f"fewer than the {wanted} asked for; scoring those")
    else:
        with progress_bar(o.progress) as bar:
            task = bar.add_task("fetching arXiv papers", total=wanted)
            for record, cached in src.iter_records(opts):
                stats["listed"] += 1
                stats["from_cache" if cached else "fetched"] += 1
                stats["abstract_only"] += record.text_source == "abstract"
                if (paper := selector.offer(record.to_paper())) is not None:
                    kept.append(paper)
                    bar.update(task, completed=len(kept))
                    if len(kept) >= wanted:
                        break
        if not kept:
            raise UserError(f"arXiv lists no usable papers for {where} (listed {stats['listed']}, "
                            f"{len(selector.too_short)} shorter than {o.min_chars} characters)")
        if len(kept) < wanted:
            warn(f"arXiv has only {len(kept)} usable papers for {where}, fewer than the {wanted} asked for")
    info = {"source": "arxiv", "window": {"since": str(since), "until": str(until)}, "categories": categories,
            "cache_dir": str(cache.root), "offline": o.offline, "fetch": stats,
            "fetch_settings": {"delay_s": o.delay, "page_size": o.page_size, "retries": o.retries},
            "dropped": selector.dropped(), "shortfall": max(0, wanted - len(kept))}
    return kept, info  # newest first


def gather_resumed(meta: dict, run_dir: Path) -> list[Paper]:
    """The texts a run was started on, checked against papers.csv's sha256."""
    listed = pd.read_csv(run_dir / "papers.csv", dtype={"paper_id": str}, keep_default_na=False)
    chars, min_chars = meta["chars"], meta["min_chars"]
    if meta.get("source") == "file":
        pool = {p.paper_id: p for p in read_papers_file(meta["papers_file"])}
    else:
        cache = src.Cache(meta.get("cache_dir"))
        pool = {pid: r.to_paper() for pid in listed["paper_id"] if (r := cache.get(pid)) is not None}
    papers = []
    for pid, digest in zip(listed["paper_id"], listed["sha256"]):
        if pid not in pool:
            raise UserError(f"cannot resume {run_dir}: text {pid} is no longer available")
        paper, _ = select([pool[pid]], chars=chars, min_chars=min_chars)
        if not paper or paper[0].sha256 != digest:
            raise UserError(f"cannot resume {run_dir}: text {pid} changed since the run started")
        papers.append(paper[0])
    return papers


# ---- scoring ----

def score(backend, text: str, stride: int | None):
    from ..scoring import score_text

    try:
        return score_text(backend, text, stride=stride)
    except ValueError as exc:  # a stride the model's window cannot take
        raise UserError(f"{backend.spec}: {exc}") from None


def protocol_of(backend, stride: int | None) -> str:
    fn = getattr(backend, "protocol", None)
    try:
        return fn(stride) if fn else "one pass over the whole text"
    except ValueError as exc:
        raise UserError(f"{backend.spec}: {exc}") from None


def read_per_paper(path: Path) -> pd.DataFrame:
    """per_paper.csv with ids kept as strings ('2501.01230' must not become a float)."""
    return read_rows(path, PER_PAPER_COLUMNS, dtype={"paper_id": str, "model": str}, keep_default_na=False,
                     na_values={"logprob_nats": [""]})


def score_models(papers: list[Paper], o: UncheatableConfig, specs: list, run_dir: Path) -> None:
    import torch

    from ..backends import load
    from ..specs import identity
    from ..trackers import latency

    per_paper = run_dir / "per_paper.csv"
    done = read_per_paper(per_paper)
    done_pairs = set(zip(done["model"], done["paper_id"]))
    device, dtype = parse_device(o.device), parse_dtype(o.dtype)
    for spec in specs:
        todo = [p for p in papers if (spec.text, p.paper_id) not in done_pairs]
        if not todo:
            console(o.progress).print(f"{spec.text}: all {len(papers)} papers already scored (resumed)")
            continue
        with latency() as loading:
            backend = load(spec, device=device, dtype=dtype, tokenizer=o.tokenizer)
        if backend.random_weights:
            warn(RANDOM_WARNING.format(spec=spec.text))
        meta = read_meta(run_dir)
        meta.setdefault("models", {})[spec.text] = {
            **backend.describe(), "identity": identity(spec), "protocol": protocol_of(backend, o.stride),
            "bos_token_id": backend.bos_token_id, "load_seconds": round(loading.seconds, 2),
            "torch_threads": torch.get_num_threads()}
        write_json(run_dir / "meta.json", meta)
        with progress_bar(o.progress) as bar:
            task = bar.add_task(f"scoring {spec.text}", total=len(papers), completed=len(papers) - len(todo))
            for paper in todo:
                with latency(backend.device) as timing:
                    result = score(backend, paper.text, o.stride)
                row = result.as_dict()
                row.update(model=spec.text, paper_id=paper.paper_id, text_source=paper.text_source,
                           bits=result.bits, seconds=round(timing.seconds, 4),
                           tokens_per_s=result.tokens / timing.seconds if timing.seconds > 0 else math.nan,
                           random_weights=backend.random_weights)
                append_row(per_paper, row, PER_PAPER_COLUMNS)
                bar.advance(task)
        del backend
        gc.collect()


# ---- the whole run ----

def run(given: dict, *, out: Path | None = None, resume: bool = False) -> Path:
    """Gather texts, score them under every model (resuming if asked), write the report; the run dir.
    `given`: UncheatableConfig fields set by the user (None or absent: the default, or the resumed run's)."""
    run_dir, old_meta = open_run(KIND, out=out, resume=resume, results=("per_paper.csv", "papers.csv"))
    o = merge_options(UncheatableConfig, given, (old_meta or {}).get("options"))
    specs = check_options(o)
    if old_meta is not None:
        if not (run_dir / "papers.csv").is_file():
            raise UserError(f"--resume: {run_dir} holds no papers.csv: nothing to resume")
        papers = gather_resumed(old_meta, run_dir)
        resume_meta(run_dir, old_meta, as_dict(o))
    else:
        papers, info = gather_file(o) if o.papers_file else gather_arxiv(o)
        start_meta(run_dir, KIND, as_dict(o), **info, papers_requested=o.papers, papers=len(papers), chars=o.chars,
                   min_chars=o.min_chars, ids=[p.paper_id for p in papers], model_specs=[s.text for s in specs],
                   models={}, stride=o.stride,
                   bootstrap={"resamples": o.bootstrap, "level": 0.95, "seed": o.seed, "unit": "paper"},
                   protocol=PROTOCOL)
        pd.DataFrame([p.row() for p in papers]).reindex(columns=PAPER_COLUMNS).to_csv(run_dir / "papers.csv",
                                                                                       index=False)
    score_models(papers, o, specs, run_dir)
    finish_meta(run_dir)
    from .report import render

    render(run_dir)
    return run_dir


PROTOCOL = ("Each text is NFC-normalised and cut to its first `chars` characters. It is tokenized by each "
            "model's own tokenizer without special tokens, and every token is scored, the first conditioned on "
            "the model's BOS / end-of-text token (token 0 for RWKV-4 Pile models), which is not scored. "
            "Transformers score texts longer than their context with a sliding window (see each model's "
            "protocol); RWKV carries its state over the whole text. logprob_nats is the sum of natural-log "
            "probabilities; bits_per_byte = -logprob_nats / ln 2 / UTF-8 bytes; bits_per_char divides by "
            "characters; compression_rate_pct = bits_per_byte / 8 x 100. Intervals: percentile bootstrap over "
            "papers (95%); pairs of models compared paper by paper on the papers both scored.")
