"""SQuAD answer matching for lm-eval tasks that import `transformers.data.metrics.squad_metrics`.

transformers 5 removed that module, and lm-eval 0.4's ReCoRD (`record`, one of the paper's twelve tasks)
plus CoQA, XQuAD and a few others still import it, so they fail to load. `install()` registers this module
under that name only when the real one is missing. The scoring is the official SQuAD v1.1 rule: lower-case,
drop punctuation and the articles a/an/the, collapse whitespace; exact match compares the normalised
strings, F1 the bags of normalised words.
"""
from __future__ import annotations

import importlib.util
import re
import string
import sys
import types
from collections import Counter

MODULE = "transformers.data.metrics.squad_metrics"
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def get_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold, pred = get_tokens(a_gold), get_tokens(a_pred)
    if not gold or not pred:  # no answer: 1 if both empty, else 0
        return float(gold == pred)
    same = sum((Counter(gold) & Counter(pred)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def install() -> bool:
    """Make `import transformers.data.metrics.squad_metrics` work; True when the shim was installed."""
    if MODULE in sys.modules:
        return False
    try:
        if importlib.util.find_spec(MODULE) is not None:
            return False
    except ModuleNotFoundError:  # transformers.data.metrics itself is gone
        pass
    except ImportError:
        return False
    this = sys.modules[__name__]
    parent = sys.modules.get("transformers.data.metrics")
    if parent is None:
        parent = types.ModuleType("transformers.data.metrics")
        parent.__path__ = []  # a namespace-like package, so the submodule import resolves
        sys.modules["transformers.data.metrics"] = parent
    parent.squad_metrics = this
    sys.modules[MODULE] = this
    return True
