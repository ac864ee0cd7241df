"""Training-data cutoffs of the models the README names: the uncheatable eval scores only texts published
after the latest cutoff of the models compared (or after --after).

Each entry: a pattern matched against the model spec (case-insensitive, fnmatch), the last day of its
training data as published, and where that date comes from. A date known only to the month or year is
taken at its end (the later date is the safe side: a text after it was not trained on).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fnmatch import fnmatch


@dataclass(frozen=True)
class Cutoff:
    date: dt.date
    data: str
    citation: str


# The Pile: released 2020-12-31; its newest documents are from 2020 (Gao et al., "The Pile: An 800GB Dataset
# of Diverse Text for Language Modeling", arXiv:2101.00027).
PILE = Cutoff(dt.date(2020, 12, 31), "the Pile", "Gao et al. 2020, arXiv:2101.00027")
# SmolLM2 was trained on FineWeb-Edu, DCLM, The Stack and new sets built in 2024 (Allal et al., "SmolLM2: When
# Smol Goes Big", arXiv:2502.02737; model card huggingface.co/HuggingFaceTB/SmolLM2-135M): 2024, taken at its end.
SMOLLM2 = Cutoff(dt.date(2024, 12, 31), "SmolLM2's 2024 corpus (FineWeb-Edu, DCLM, The Stack, ...)",
                 "Allal et al. 2025, arXiv:2502.02737")

TABLE: list[tuple[str, Cutoff]] = [
    # RWKV-4 Pile models (Peng et al. 2023, arXiv:2305.13048, sec. 5: trained on the Pile)
    ("rwkv/rwkv-4-*-pile", PILE),
    ("blinkdl/rwkv-4-pile-*", PILE),
    # RWKV-7 Pile models (BlinkDL/rwkv-7-pile, RWKV-x070-Pile-*: trained on the Pile, as their name says)
    ("hf://blinkdl/rwkv-7-pile/*", PILE),
    # Pythia (Biderman et al. 2023, arXiv:2304.01373: every model trained on the Pile, deduplicated or not)
    ("eleutherai/pythia-*", PILE),
    # GPT-NeoX-20B (Black et al. 2022, arXiv:2204.06745: the Pile)
    ("eleutherai/gpt-neox-20b", PILE),
    ("smollm2-135m", SMOLLM2),
    ("huggingfacetb/smollm2-*", SMOLLM2),
]

# our presets with random weights (rwkv4-tiny, rwkv4-169m, gptneox-*, ...) saw no data: nothing to avoid
RANDOM = "random weights (no training data)"


def cutoff_of(spec) -> Cutoff | None:
    """The cutoff for a parsed model spec (specs.ModelSpec), or None when the table does not know it."""
    text = spec.text.lower()
    for pattern, cutoff in TABLE:
        if fnmatch(text, pattern) or fnmatch(text.rsplit(":", 1)[-1], pattern):
            return cutoff
    return None


@dataclass
class DateRule:
    """The first publication date the run keeps and why: `after` is the last excluded day."""
    after: dt.date | None
    reason: str
    models: dict[str, str]          # spec -> its cutoff as said in meta.json and the summary


def date_rule(specs: list, after: dt.date | None) -> DateRule:
    """--after if given; else the latest known cutoff of the models. Models with random weights are left
    out; a model with no known cutoff is named, and needs --after to be safe."""
    models: dict[str, str] = {}
    known: list[tuple[dt.date, str]] = []
    for spec in specs:
        if spec.random_weights:
            models[spec.text] = RANDOM
        elif (c := cutoff_of(spec)) is not None:
            models[spec.text] = f"{c.date} ({c.data}; {c.citation})"
            known.append((c.date, spec.text))
        else:
            models[spec.text] = "unknown"
    if after is not None:
        return DateRule(after, f"--after {after}", models)
    if not known:
        return DateRule(None, "no model has a known training cutoff (pass --after DATE)", models)
    date, spec = max(known)
    unknown = [s for s, v in models.items() if v == "unknown"]
    reason = f"the latest training cutoff of the models compared: {spec}, {date}"
    if unknown:
        reason += f" (unknown for {', '.join(unknown)}: pass --after to cover them)"
    return DateRule(date, reason, models)
