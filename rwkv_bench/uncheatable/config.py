"""The uncheatable eval's options as the user gives them: defaults and help text in one place (CLI flags,
meta.json, resume). `settings.settle` parses and checks them once into the typed `Settings` the run uses."""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from ..models.presets import PILE_TRIO
from ..options import ModelOptions, option

DEFAULT_MODELS = PILE_TRIO
DEFAULT_PAPERS = 1000
DEFAULT_CHARS = 5000
DEFAULT_MIN_CHARS = 2000


@dataclass
class UncheatableConfig(ModelOptions):
    models: str | list[str] = option(DEFAULT_MODELS, "Comma-separated model specs (presets, paths, hub ids).",
                                     fixed=True, flags=("--models", "-m"))
    sources: str | None = option(None, "Comma-separated text sources: arxiv, wikipedia, github, biorxiv, file "
                                       "(default: arxiv, or file with --papers-file).", fixed=True)
    papers: int | None = option(None, f"Texts per source (default: {DEFAULT_PAPERS} from a fetched source; every "
                                      "text of --papers-file).", flags=("--papers", "-n"))
    papers_file: Path | None = option(None, "JSON/JSONL of your own texts (strings or objects with 'text'; "
                                            "optional 'source', 'published', 'title', 'url', 'licence').")
    after: str | None = option(None, "Keep only texts published after this date, YYYY-MM-DD (default: the latest "
                                     "training cutoff of the models, where known).")
    since: str | None = option(None, "First publication date, YYYY-MM-DD (default: 14 days before today, or the "
                                     "day after the cutoff if later).")
    until: str | None = option(None, "Last publication date, YYYY-MM-DD (default: yesterday).")
    categories: str | None = option(None, "Comma-separated arXiv categories, e.g. cs.CL,cs.LG (default: all).")
    wikipedia_lang: str = option("en", "Wikipedia language code (the wikipedia source).")
    github_extensions: str = option(".py", "File extensions taken from new GitHub repositories (the github source).")
    chars: int = option(DEFAULT_CHARS, "Characters kept per text (the first ones; 0 keeps whole texts).", fixed=True)
    min_chars: int = option(DEFAULT_MIN_CHARS, "Shorter texts are skipped (fetched) or rejected (file).", fixed=True)
    chunk_tokens: int = option(0, "Score independent chunks of this many tokens, each after the BOS token (the "
                                  "public uncheatable-eval leaderboard's protocol); 0: each text in one pass.",
                               fixed=True)
    cache_dir: Path | None = option(None, "Cache of fetched texts (default: the user cache dir).")
    offline: bool = option(False, "Use only cached texts; no network.", flags=("--offline/--online",))
    stride: int | None = option(None, "Sliding-window stride for transformers (default: half the context).",
                                fixed=True)
    delay: float | None = option(None, "Seconds between requests to a source (default and least: 3 for arXiv, "
                                       "1 for the others; any on a mirror set by RWKV_BENCH_<SOURCE>_URL).")
    page_size: int = option(100, "Results per API page.")
    retries: int = option(3, "Retries of a failed request.")
    bootstrap: int = option(10_000, "Bootstrap resamples for the intervals.")
    seed: int = option(0, "Seed of the bootstrap.")
    # how the run is shown, not what it measures: not stored in meta.json
    progress: bool = dataclasses.field(default=True, metadata={"internal": True})
    today: dt.date | None = dataclasses.field(default=None, metadata={"internal": True})  # tests pin the window
