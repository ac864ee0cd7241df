"""The uncheatable eval's run loop: gather texts, score them under every model, write rows as they come.

A run directory holds meta.json (kind "uncheatable"), papers.csv (what was scored: ids, sha256 of the
scored text, source), per_paper.csv (one row per model and paper, appended and fsynced as soon as the
paper is scored), token_logprobs.npz (every scored token's log-probability) and the tables and figures
`report.render` makes from those. `--resume` continues a run: the same texts (checked by sha256) and no
(model, paper) pair scored twice.

Under torchrun (`torchrun --nproc-per-node N --no-python rwkv-bench uncheatable ...`, see
`rwkv_bench.distributed`) the (model, paper) pairs are split across ranks. Rank 0 alone checks the options,
reads the texts (it alone talks to arXiv), writes meta.json and papers.csv, and hands the texts to the
other ranks over the process group, so no other rank touches arXiv or its cache. For each model the papers
still to score are dealt out by length (longest first, each to the rank with the fewest characters so
far); each rank loads the model on its own device (its LOCAL_RANK's GPU, or its share of the CPU cores) and
scores its share with no further communication, appending its rows to its own part file
per_paper.rank<k>.csv, fsynced row by row as per_paper.csv is in a single process. At the end rank 0
gathers each rank's timings, merges per_paper.csv and the parts into per_paper.csv in the single-process
order (models in --models order, papers in text order), packs the per-token file and renders the report:
the files one process writes. A resume (with any number of ranks, or none) reads per_paper.csv and every
part to know what is done, so a run survives the death of any rank. Across machines, --out must be on a
filesystem every node sees (each rank writes its part file and per-token files there).

Per-token log-probabilities: each scored text's float32 array is written (atomically, before its row) to
token_logprobs/<model index>-<paper index>.npy; when the run completes they are packed into one
token_logprobs.npz in per_paper.csv's row order (layout: `report.read_token_logprobs`) and the directory
is removed.
"""
from __future__ import annotations

import gc
import io
import math
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import distributed
from ..errors import UserError
from ..options import as_dict, canonical_dtype, merge_options, parse_device, parse_dtype, positive
from ..recording import (append_row, csv_text, finish_meta, open_run, read_meta, read_rows, resume_meta,
                         start_meta, write_atomically, write_json)
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
PART_GLOB = "per_paper.rank*.csv"    # one per rank under torchrun, merged into per_paper.csv at the end
TOKENS_DIR = "token_logprobs"        # per-text .npy files while the run goes on
TOKENS_FILE = "token_logprobs.npz"   # all of them, packed when the run completes
WHOLE_TEXT = sys.maxsize             # --chars 0: no cut


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

def cut(chars: int) -> int:
    """The characters kept per text: --chars, or every one for --chars 0."""
    return chars if chars else WHOLE_TEXT


def check_options(o: UncheatableConfig) -> list:
    """Every option checked before any text is fetched or model loaded; returns the parsed model specs."""
    from ..backends import check_reachable

    positive(o.papers, "--papers")
    if o.chars < 0:
        raise UserError(f"--chars must be positive, or 0 to keep whole texts, got {o.chars}")
    check_lengths(cut(o.chars), o.min_chars)
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
    papers, dropped = select(read_papers_file(o.papers_file), chars=cut(o.chars), min_chars=o.min_chars,
                             short="error", limit=o.papers)
    for dup, first in dropped["duplicates"]:
        warn(f"text {dup} repeats text {first} exactly: dropped")
    if o.papers and len(papers) < o.papers:
        warn(f"{o.papers_file} holds {len(papers)} distinct texts, fewer than the {o.papers} asked for")
    return papers, {"source": "file", "papers_file": str(Path(o.papers_file).resolve()), "dropped": dropped}


def take(records, selector: Selector, wanted: int, stats: dict, on_kept=lambda n: None) -> list[Paper]:
    """The first `wanted` usable papers of (record, from_cache) pairs, counting what was seen in `stats`."""
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


def gather_arxiv(o: UncheatableConfig) -> tuple[list[Paper], dict]:
    since, until = src.parse_window(o.since, o.until, o.today)
    wanted = o.papers or DEFAULT_PAPERS
    cache = src.Cache(o.cache_dir)
    categories = src.parse_categories(o.categories)
    opts = src.FetchOptions(cache=cache, since=since, until=until, categories=categories, delay=o.delay,
                            page_size=o.page_size, retries=o.retries, max_chars=max(src.CACHE_MAX_CHARS, cut(o.chars)))
    selector = Selector(chars=cut(o.chars), min_chars=o.min_chars)
    stats = {"listed": 0, "from_cache": 0, "fetched": 0, "abstract_only": 0}
    where = f"{since}..{until}" + (f" in {','.join(categories)}" if categories else "")
    if o.offline:
        cached = ((record, True) for record in src.cached_in_window(cache, since, until, categories))
        kept = take(cached, selector, wanted, stats)
        if not kept:
            raise UserError(f"--offline: the cache {cache.dir} holds no usable papers for {where}; "
                            "run once without --offline to fill it")
        if len(kept) < wanted:
            warn(f"--offline: the cache holds only {len(kept)} usable papers for {where}, "
                 f"fewer than the {wanted} asked for; scoring those")
    else:
        with progress_bar(o.progress) as bar:
            task = bar.add_task("fetching arXiv papers", total=wanted)
            kept = take(src.iter_records(opts), selector, wanted, stats,
                        on_kept=lambda n: bar.update(task, completed=n))
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
    chars, min_chars = cut(meta["chars"]), meta["min_chars"]
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

def score_tokens(backend, text: str, stride: int | None):
    """The text's TextScore and every token's log-probability (float32, for the loss-by-position report)."""
    from ..scoring import score_tokens as score_with_logprobs

    result, logprobs = score_with_logprobs(backend, text, stride)
    return result, logprobs.detach().cpu().numpy().astype(np.float32)


def score(backend, text: str, stride: int | None):
    from ..scoring import score_text  # the TextScore alone: no per-token array to convert

    return score_text(backend, text, stride)


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


def row_files(run_dir: Path) -> list[Path]:
    """per_paper.csv and the part files of ranks, whichever exist."""
    return [p for p in [run_dir / "per_paper.csv", *sorted(run_dir.glob(PART_GLOB))] if p.is_file()]


def done_pairs(run_dir: Path) -> set[tuple[str, str]]:
    """(model, paper_id) pairs with a row in per_paper.csv or in any rank's part file."""
    done = set()
    for path in row_files(run_dir):
        rows = read_per_paper(path)
        done |= set(zip(rows["model"], rows["paper_id"]))
    return done


def deal(todo: list[Paper], ranks: int) -> list[list[Paper]]:
    """Each rank's share of `todo`: longest text first, each to the rank with the fewest characters so far
    (ties: the lowest rank); every share in text order. The same on every rank (no randomness)."""
    order = {p.paper_id: i for i, p in enumerate(todo)}
    loads, shares = [0] * ranks, [[] for _ in range(ranks)]
    for paper in sorted(todo, key=lambda p: -len(p.text)):       # stable: equal lengths in text order
        k = loads.index(min(loads))
        shares[k].append(paper)
        loads[k] += len(paper.text)
    return [sorted(share, key=lambda p: order[p.paper_id]) for share in shares]


@dataclass
class Plan:
    """What rank 0 prepared and every rank works from."""
    run_dir: Path
    options: UncheatableConfig
    specs: list
    papers: list[Paper]
    done: set


def model_entry(spec, backend, o: UncheatableConfig, load_seconds: float) -> dict:
    import torch

    from ..specs import identity

    return {**backend.describe(), "identity": identity(spec), "protocol": protocol_of(backend, o.stride),
            "bos_token_id": backend.bos_token_id, "load_seconds": round(load_seconds, 2),
            "torch_threads": torch.get_num_threads()}


def save_token_logprobs(path: Path, logprobs: np.ndarray) -> None:
    """One text's log-probabilities, written whole or not at all (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, logprobs)
    write_atomically(path, buf.getvalue())


def score_models(plan: Plan, dist: distributed.Dist, device: str) -> dict:
    """Score this rank's share of every model's remaining papers; what it did, for meta.json."""
    import torch

    from ..backends import load
    from ..trackers import latency

    o, run_dir = plan.options, plan.run_dir
    rows_path = run_dir / (f"per_paper.rank{dist.rank}.csv" if dist.enabled else "per_paper.csv")
    paper_index = {p.paper_id: i for i, p in enumerate(plan.papers)}
    dtype = parse_dtype(o.dtype)
    die = distributed.die_after()
    written = 0
    mine = {"rank": dist.rank, "local_rank": dist.local_rank, "host": platform.node(), "device": device,
            "torch_threads": torch.get_num_threads(), "models": {}}
    for model_index, spec in enumerate(plan.specs):
        todo = [p for p in plan.papers if (spec.text, p.paper_id) not in plan.done]
        if not todo:
            if dist.is_main:
                console(o.progress).print(f"{spec.text}: all {len(plan.papers)} papers already scored (resumed)")
            continue
        share = deal(todo, dist.world_size)[dist.rank]
        if not share:
            continue
        with latency() as loading:
            backend = load(spec, device=device, dtype=dtype, tokenizer=o.tokenizer)
        entry = model_entry(spec, backend, o, loading.seconds)
        if dist.is_main:
            if backend.random_weights:
                warn(RANDOM_WARNING.format(spec=spec.text))
            meta = read_meta(run_dir)
            meta.setdefault("models", {})[spec.text] = entry
            write_json(run_dir / "meta.json", meta)
        started, cpu_started = time.perf_counter(), time.process_time()
        with progress_bar(o.progress and dist.is_main) as bar:
            if dist.enabled:
                task = bar.add_task(f"scoring {spec.text} (rank 0's {len(share)} of {len(todo)})", total=len(share))
            else:
                task = bar.add_task(f"scoring {spec.text}", total=len(plan.papers),
                                    completed=len(plan.papers) - len(todo))
            for paper in share:
                with latency(backend.device) as timing:
                    result, logprobs = score_tokens(backend, paper.text, o.stride)
                save_token_logprobs(run_dir / TOKENS_DIR / f"{model_index}-{paper_index[paper.paper_id]}.npy",
                                    logprobs)
                row = result.as_dict()
                row.update(model=spec.text, paper_id=paper.paper_id, text_source=paper.text_source,
                           bits=result.bits, seconds=round(timing.seconds, 4),
                           tokens_per_s=result.tokens / timing.seconds if timing.seconds > 0 else math.nan,
                           random_weights=backend.random_weights)
                append_row(rows_path, row, PER_PAPER_COLUMNS)
                bar.advance(task)
                written += 1
                distributed.die_if_asked(die, dist, written)
        # CPU seconds beside wall seconds: a rank that got less than its cores (a busy machine) shows here
        mine["models"][spec.text] = {"entry": entry, "papers": len(share),
                                     "scoring_seconds": round(time.perf_counter() - started, 3),
                                     "scoring_cpu_seconds": round(time.process_time() - cpu_started, 3)}
        del backend
        gc.collect()
    return mine


# ---- completing a run (rank 0) ----

def read_raw_rows(path: Path) -> list[dict]:
    """A row file's complete rows as the strings written (a last line cut short by a kill is dropped)."""
    return read_rows(path, dtype=str, keep_default_na=False).to_dict("records")


def merge_rows(run_dir: Path, specs: list, papers: list[Paper]) -> None:
    """per_paper.csv and every rank's part into per_paper.csv, one row per (model, paper) in the single-process
    order, values as written; then the parts are removed. Nothing to do without parts."""
    parts = sorted(run_dir.glob(PART_GLOB))
    if not parts:
        return
    rank = {(s.text, p.paper_id): (i, j) for i, s in enumerate(specs) for j, p in enumerate(papers)}
    rows: dict[tuple, dict] = {}
    for path in [run_dir / "per_paper.csv", *parts]:
        for row in read_raw_rows(path):
            rows.setdefault((row["model"], row["paper_id"]), row)
    ordered = sorted(rows.items(), key=lambda kv: rank.get(kv[0], (len(specs), len(papers))))
    write_atomically(run_dir / "per_paper.csv",
                     csv_text((row for _, row in ordered), PER_PAPER_COLUMNS, header=True).encode("utf-8"))
    for path in parts:
        path.unlink()


def pack_token_logprobs(run_dir: Path, specs: list, papers: list[Paper]) -> Path | None:
    """token_logprobs/ (and an earlier token_logprobs.npz) into one token_logprobs.npz in per_paper.csv's row
    order; the directory is removed. Rows without log-probabilities (a run from before they were kept) are
    left out. None when there is nothing to pack."""
    from .report import read_token_logprobs, token_files

    arrays: dict[tuple[str, str], np.ndarray] = {}
    packed = run_dir / TOKENS_FILE
    if packed.is_file():
        for model, items in read_token_logprobs(run_dir).items():
            arrays.update({(model, pid): values for pid, values in items})
    folder = run_dir / TOKENS_DIR
    for i, j, path in token_files(folder):
        arrays[(specs[i].text, papers[j].paper_id)] = np.load(path)
    if not arrays:
        return None
    rows = read_per_paper(run_dir / "per_paper.csv")
    models = [s.text for s in specs]
    keys = [(m, pid) for m, pid in zip(rows["model"], rows["paper_id"]) if (m, pid) in arrays and m in models]
    lengths = np.array([len(arrays[k]) for k in keys], dtype=np.int64)
    buf = io.BytesIO()
    np.savez_compressed(
        buf, models=np.array(models, dtype=str), model=np.array([models.index(m) for m, _ in keys], dtype=np.int32),
        paper_id=np.array([pid for _, pid in keys], dtype=str),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        logprobs=np.concatenate([arrays[k] for k in keys]).astype(np.float32) if keys else np.zeros(0, np.float32))
    write_atomically(packed, buf.getvalue())
    if folder.is_dir():
        shutil.rmtree(folder)
    return packed


def complete(plan: Plan, ranks: list[dict], dist: distributed.Dist) -> None:
    """Rank 0, once every rank is done: merged rows, packed log-probabilities, timings in meta.json, report."""
    run_dir = plan.run_dir
    merge_rows(run_dir, plan.specs, plan.papers)
    pack_token_logprobs(run_dir, plan.specs, plan.papers)
    meta = read_meta(run_dir)
    models = meta.setdefault("models", {})
    for spec in plan.specs:
        did = [(r, r["models"][spec.text]) for r in ranks if spec.text in r["models"]]
        if not did:
            continue
        entry = models.setdefault(spec.text, did[0][1]["entry"])  # rank 0 wrote it, unless it had no share
        # this launch's scoring phase (model loading excluded): the slowest rank's wall seconds, every rank's CPU
        entry["scoring_seconds"] = max(m["scoring_seconds"] for _, m in did)
        entry["scoring_cpu_seconds"] = round(sum(m["scoring_cpu_seconds"] for _, m in did), 3)
        entry["papers_scored"] = sum(m["papers"] for _, m in did)
        if dist.enabled:
            entry["ranks"] = [{"rank": r["rank"], "host": r["host"], "device": r["device"],
                               "torch_threads": r["torch_threads"], "load_seconds": m["entry"]["load_seconds"],
                               "papers": m["papers"], "scoring_seconds": m["scoring_seconds"],
                               "scoring_cpu_seconds": m["scoring_cpu_seconds"]} for r, m in did]
    if dist.enabled:
        meta["distributed"] = {"world_size": dist.world_size, "backend": distributed.process_group_backend(),
                               "ranks": [{k: r[k] for k in ("rank", "local_rank", "host", "device", "torch_threads")}
                                         for r in ranks]}
    write_json(run_dir / "meta.json", meta)
    finish_meta(run_dir)
    from ..report.build import render_run  # the kind's tables and figures, then index.md

    render_run(run_dir)


# ---- the whole run ----

def prepare(given: dict, out: Path | None, resume: bool) -> Plan:
    """Rank 0 (or the only process): options checked, texts gathered, meta.json and papers.csv written."""
    run_dir, old_meta = open_run(KIND, out=out, resume=resume, results=("per_paper.csv", "papers.csv", PART_GLOB))
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
    return Plan(run_dir, o, specs, papers, done_pairs(run_dir))


def run(given: dict, *, out: Path | None = None, resume: bool = False) -> Path:
    """Gather texts, score them under every model (resuming if asked), write the report; the run dir.
    `given`: UncheatableConfig fields set by the user (None or absent: the default, or the resumed run's).
    Under torchrun every rank calls this; the (model, paper) pairs are split between them (module doc)."""
    dist = distributed.init()
    plan = distributed.rank_zero_first(lambda: prepare(given, out, resume), dist)
    mine = score_models(plan, dist, distributed.device_for(plan.options.device, dist))
    ranks = distributed.gather_objects(mine, dist)
    if dist.is_main:
        complete(plan, ranks, dist)
    distributed.barrier(dist)  # the report is written before any rank returns
    distributed.shutdown()
    return plan.run_dir


PROTOCOL = ("Each text is NFC-normalised and cut to its first `chars` characters (0: the whole text). It is "
            "tokenized by each "
            "model's own tokenizer without special tokens, and every token is scored, the first conditioned on "
            "the model's BOS / end-of-text token (token 0 for RWKV-4 Pile models), which is not scored. "
            "Transformers score texts longer than their context with a sliding window (see each model's "
            "protocol); RWKV carries its state over the whole text. logprob_nats is the sum of natural-log "
            "probabilities; bits_per_byte = -logprob_nats / ln 2 / UTF-8 bytes; bits_per_char divides by "
            "characters; compression_rate_pct = bits_per_byte / 8 x 100. Intervals: percentile bootstrap over "
            "papers (95%); pairs of models compared paper by paper on the papers both scored. Loss by "
            "position: each token's bits (-log2 p), averaged within log-spaced bins of token position in each "
            "text, then over the texts that reach the bin (95% percentile bootstrap over texts).")
