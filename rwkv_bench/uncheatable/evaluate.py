"""The uncheatable eval's run loop: settle the options, gather the texts, score them under every model,
write each row as it comes (through `store`, the run directory's one owner), and complete the run.

`--resume` continues a run: the same texts (checked by sha256) and no (model, paper) pair scored twice.

Under torchrun (`torchrun --nproc-per-node N --no-python rwkv-bench uncheatable ...`, see
`rwkv_bench.distributed`) the (model, paper) pairs are split across ranks. Rank 0 alone settles the
options, gathers the texts (it alone talks to the sources), writes meta.json and papers.csv, and hands the
plan to the other ranks over the process group. For each model the papers still to score are dealt out by
length (longest first, each to the rank with the fewest characters so far); each rank loads the model on
its own device (its LOCAL_RANK's GPU, or its share of the CPU cores) and appends its rows to its own part
file, fsynced row by row. At the end rank 0 gathers each rank's timings, merges the parts into
per_paper.csv in the single-process order, packs the per-token file and renders the report. A resume (with
any number of ranks, or none) reads per_paper.csv and every part to know what is done, so a run survives
the death of any rank. Across machines, --out must be on a filesystem every node sees.
"""
from __future__ import annotations

import gc
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import distributed
from ..errors import UserError
from ..options import as_dict, merge_options, parse_dtype
from ..recording import finish_meta, open_run, read_meta, resume_meta, start_meta, write_json
from . import store
from .config import UncheatableConfig
from ..console import progress_bar, stderr_console, warn
from .gather import gather, gather_resumed
from .settings import Settings, settle
from .texts import Paper

RANDOM_WARNING = "{spec} has random weights: its scores say nothing about language-modelling quality"


# ---- scoring one text ----

def chunked_logprobs(backend, ids: list[int], chunk_tokens: int):
    """The public leaderboard's protocol: independent chunks of `chunk_tokens` tokens, each scored after the
    model's BOS token alone (token 0 for RWKV-4 Pile models), no state or context carried between them."""
    import torch

    parts = [backend.token_logprobs(ids[i:i + chunk_tokens]) for i in range(0, len(ids), chunk_tokens)]
    return torch.cat(parts)


def score(backend, text: str, stride: int | None, chunk_tokens: int = 0):
    """The text's TextScore and every token's log-probability (float32, for the loss-by-position report)."""
    from ..scoring import TextScore, score_tokens

    if not chunk_tokens:
        result, logprobs = score_tokens(backend, text, stride)
    else:
        ids = backend.encode(text)
        if not ids:
            raise UserError("the text encodes to zero tokens: nothing to score")
        logprobs = chunked_logprobs(backend, ids, chunk_tokens)
        result = TextScore(model=backend.spec, implementation=backend.implementation, tokens=len(ids),
                           bytes=len(text.encode("utf-8")), chars=len(text), logprob_nats=float(logprobs.sum()))
    return result, logprobs.detach().cpu().numpy().astype(np.float32)


def protocol_of(backend, stride: int | None, chunk_tokens: int = 0) -> str:
    if chunk_tokens:
        if backend.max_context and chunk_tokens + 1 > backend.max_context:
            raise UserError(f"{backend.spec}: --chunk-tokens {chunk_tokens} does not fit its context of "
                            f"{backend.max_context} tokens with BOS")
        return f"independent chunks of {chunk_tokens} tokens, each after BOS"
    fn = getattr(backend, "protocol", None)
    try:
        return fn(stride) if fn else "one pass over the whole text"
    except ValueError as exc:
        raise UserError(f"{backend.spec}: {exc}") from None


# ---- sharing the work ----

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
    settings: Settings
    papers: list[Paper]
    done: set

    @property
    def models(self) -> list[str]:
        return [s.text for s in self.settings.specs]

    @property
    def ids(self) -> list[str]:
        return [p.paper_id for p in self.papers]


def model_entry(spec, backend, st: Settings, load_seconds: float) -> dict:
    import torch

    from ..specs import identity

    return {**backend.describe(), "identity": identity(spec),
            "protocol": protocol_of(backend, st.stride, st.chunk_tokens), "bos_token_id": backend.bos_token_id,
            "training_cutoff": st.rule.models.get(spec.text, "unknown"), "load_seconds": round(load_seconds, 2),
            "torch_threads": torch.get_num_threads()}


def score_models(plan: Plan, dist: distributed.Dist, device: str) -> dict:
    """Score this rank's share of every model's remaining papers; what it did, for meta.json."""
    import torch

    from ..backends import load
    from ..trackers import latency

    st, run_dir = plan.settings, plan.run_dir
    rows_path = store.rows_path(run_dir, dist.rank if dist.enabled else None)
    paper_index = {p.paper_id: i for i, p in enumerate(plan.papers)}
    dtype = parse_dtype(st.dtype)
    die = distributed.die_after()
    written = 0
    mine = {"rank": dist.rank, "local_rank": dist.local_rank, "host": platform.node(), "device": device,
            "torch_threads": torch.get_num_threads(), "models": {}}
    for model_index, spec in enumerate(st.specs):
        todo = [p for p in plan.papers if (spec.text, p.paper_id) not in plan.done]
        if not todo:
            if dist.is_main:
                stderr_console(st.progress).print(f"{spec.text}: all {len(plan.papers)} papers already scored (resumed)")
            continue
        share = deal(todo, dist.world_size)[dist.rank]
        if not share:
            continue
        with latency() as loading:
            backend = load(spec, device=device, dtype=dtype, tokenizer=st.tokenizer)
        entry = model_entry(spec, backend, st, loading.seconds)
        if dist.is_main:
            if backend.random_weights:
                warn(RANDOM_WARNING.format(spec=spec.text))
            meta = read_meta(run_dir)
            meta.setdefault("models", {})[spec.text] = entry
            write_json(run_dir / store.META, meta)
        started, cpu_started = time.perf_counter(), time.process_time()
        with progress_bar(st.progress and dist.is_main) as bar:
            if dist.enabled:
                task = bar.add_task(f"scoring {spec.text} (rank 0's {len(share)} of {len(todo)})", total=len(share))
            else:
                task = bar.add_task(f"scoring {spec.text}", total=len(plan.papers),
                                    completed=len(plan.papers) - len(todo))
            for paper in share:
                with latency(backend.device) as timing:
                    result, logprobs = score(backend, paper.text, st.stride, st.chunk_tokens)
                store.save_token_logprobs(run_dir, model_index, paper_index[paper.paper_id], logprobs)
                row = result.as_dict()
                row.update(model=spec.text, paper_id=paper.paper_id, text_source=paper.text_source,
                           source=paper.source, bits=result.bits, seconds=round(timing.seconds, 4),
                           tokens_per_s=result.tokens / timing.seconds if timing.seconds > 0 else math.nan,
                           random_weights=backend.random_weights)
                store.append_score(rows_path, row)
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

def complete(plan: Plan, ranks: list[dict], dist: distributed.Dist) -> None:
    """Rank 0, once every rank is done: merged rows, packed log-probabilities, timings in meta.json, report."""
    from ..report.build import render_run

    run_dir = plan.run_dir
    store.merge_parts(run_dir, plan.models, plan.ids)
    store.pack_token_logprobs(run_dir, plan.models, plan.ids)
    meta = read_meta(run_dir)
    models = meta.setdefault("models", {})
    for spec in plan.settings.specs:
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
    write_json(run_dir / store.META, meta)
    finish_meta(run_dir)
    render_run(run_dir)  # this kind's tables and figures (report.render), then index.md


# ---- the whole run ----

# a run of one source also keeps that source's fields at the top of meta.json, where the report reads them
SINGLE_SOURCE_KEYS = ("window", "categories", "cache_dir", "offline", "fetch", "fetch_settings", "dropped",
                      "shortfall", "papers_file")


def meta_fields(st: Settings, papers: list[Paper], about: dict) -> dict:
    """What a new run's meta.json holds besides the environment and the options (store.META_KEYS)."""
    one = about[st.sources[0]] if len(st.sources) == 1 else {}
    fields = {**{k: v for k, v in one.items() if k in SINGLE_SOURCE_KEYS}, "source": ",".join(st.sources), "sources": about,
              "after": {"date": str(st.rule.after) if st.rule.after else None, "reason": st.rule.reason},
              "cutoffs": st.rule.models, "papers_requested": st.papers, "papers": len(papers),
              "chars": st.options.chars, "min_chars": st.min_chars, "ids": [p.paper_id for p in papers],
              "model_specs": [s.text for s in st.specs], "models": {}, "stride": st.stride,
              "chunk_tokens": st.chunk_tokens,
              "bootstrap": {"resamples": st.bootstrap, "level": 0.95, "seed": st.seed, "unit": "paper"},
              "protocol": PROTOCOL}
    unknown = set(fields) - set(store.META_KEYS)
    assert not unknown, f"meta.json keys not in store.META_KEYS: {sorted(unknown)}"
    return fields


def prepare(given: dict, out: Path | None, resume: bool) -> Plan:
    """Rank 0 (or the only process): options settled, texts gathered, meta.json and papers.csv written."""
    run_dir, old_meta = open_run(store.KIND, out=out, resume=resume, results=store.RESULT_FILES)
    st = settle(merge_options(UncheatableConfig, given, (old_meta or {}).get("options")))
    if old_meta is not None:
        if not (run_dir / store.PAPERS).is_file():
            raise UserError(f"--resume: {run_dir} holds no papers.csv: nothing to resume")
        papers = gather_resumed(st, run_dir)
        resume_meta(run_dir, old_meta, as_dict(st.options))
    else:
        papers, about = gather(st)
        start_meta(run_dir, store.KIND, as_dict(st.options), **meta_fields(st, papers, about))
        store.write_papers(run_dir, [p.row() for p in papers])
    return Plan(run_dir, st, papers, store.done_pairs(run_dir))


def run(given: dict, *, out: Path | None = None, resume: bool = False) -> Path:
    """Gather texts, score them under every model (resuming if asked), write the report; the run dir.
    `given`: UncheatableConfig fields set by the user (None or absent: the default, or the resumed run's).
    Under torchrun every rank calls this; the (model, paper) pairs are split between them (module doc)."""
    dist = distributed.init()
    plan = distributed.rank_zero_first(lambda: prepare(given, out, resume), dist)
    mine = score_models(plan, dist, distributed.device_for(plan.settings.device, dist))
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
