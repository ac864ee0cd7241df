"""What both kinds of measured phase share inside a child (measure.py's prefill/decode/generate and
serving_measure.py's serve): the failure that ends a phase, random token ids, the median."""
from __future__ import annotations

import statistics


class PointFailure(Exception):
    """Ends a point with a status other than ok (timeout, oom, error) and a one-line reason."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def random_ids(n: int, vocab: int, seed: int):
    """n random token ids as a 1-D int64 tensor (8 bytes a token; a list of Python ints takes 36)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g)


def median(values: list[float]) -> float:
    return float(statistics.median(values))
