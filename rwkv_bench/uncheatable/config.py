"""The uncheatable eval's options: defaults and help text in one place (CLI flags, meta.json, resume)."""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from ..options import ModelOptions, option
from .texts import DEFAULT_CHARS, DEFAULT_MIN_CHARS

# The paper's smallest pair: RWKV-4 169M (run by our RWKV-4) against Pythia-160M (transformers).
DEFAULT_MODELS = "RWKV/rwkv-4-169m-pile,EleutherAI/pythia-160m"
DEFAULT_PAPERS = 1000
MIN_DELAY_S = 3.0  # arXiv's API terms: no more than one request every three seconds


@dataclass
class UncheatableConfig(ModelOptions):
    models: str | list[str] = option(DEFAULT_MODELS, "Comma-separated model specs (presets, paths, hub ids).",
                                     fixed=True, flags=("--models", "-m"))
    papers: int | None = option(None, f"Number of papers (default: {DEFAULT_PAPERS} from arXiv; every text of "
                                      "--papers-file).", flags=("--papers", "-n"))
    papers_file: Path | None = option(None, "JSON/JSONL of your own texts (strings or objects with 'text').")
    since: str | None = option(None, "First submission date, YYYY-MM-DD (default: 14 days before today).")
    until: str | None = option(None, "Last submission date, YYYY-MM-DD (default: yesterday).")
    categories: str | None = option(None, "Comma-separated arXiv categories, e.g. cs.CL,cs.LG (default: all).")
    chars: int = option(DEFAULT_CHARS, "Characters kept per text (the first ones; 0 keeps whole texts).", fixed=True)
    min_chars: int = option(DEFAULT_MIN_CHARS, "Shorter texts are skipped (arXiv) or rejected (file).", fixed=True)
    cache_dir: Path | None = option(None, "arXiv cache directory (default: the user cache dir).")
    offline: bool = option(False, "Use only cached arXiv papers; no network.", flags=("--offline/--online",))
    stride: int | None = option(None, "Sliding-window stride for transformers (default: half the context).",
                                fixed=True)
    delay: float = option(MIN_DELAY_S, "Seconds between arXiv requests (at least 3).")
    page_size: int = option(100, "Results per arXiv API page.")
    retries: int = option(3, "Retries of a failed arXiv request.")
    bootstrap: int = option(10_000, "Bootstrap resamples for the intervals.")
    seed: int = option(0, "Seed of the bootstrap.")
    # how the run is shown, not what it measures: not stored in meta.json
    progress: bool = dataclasses.field(default=True, metadata={"internal": True})
    today: dt.date | None = dataclasses.field(default=None, metadata={"internal": True})  # tests pin the window
