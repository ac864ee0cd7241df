"""Score a text under a model: tokens, total log-probability, bits per UTF-8 byte.

This is the core of `rwkv-bench score` and of the uncheatable eval. Every token of the text is scored,
the first one conditioned on the model's BOS / end-of-text token.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .backends.base import Backend
from .errors import UserError


@dataclass
class TextScore:
    model: str
    implementation: str
    tokens: int
    bytes: int
    chars: int
    logprob_nats: float

    @property
    def bits(self) -> float:
        return -self.logprob_nats / math.log(2)

    @property
    def bits_per_byte(self) -> float:
        return self.bits / self.bytes

    @property
    def bits_per_char(self) -> float:
        return self.bits / self.chars

    @property
    def compression_rate_pct(self) -> float:
        """The uncheatable-eval leaderboards' figure: bits per byte / 8 x 100."""
        return self.bits_per_byte / 8 * 100

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(bits_per_byte=self.bits_per_byte, bits_per_char=self.bits_per_char,
                   compression_rate_pct=self.compression_rate_pct)
        return out


def score_text(backend: Backend, text: str, stride: int | None = None) -> TextScore:
    """`stride`: the sliding-window step for texts longer than a transformer's context (None: the backend's
    default, half the context); RWKV carries its state and ignores it."""
    return score_tokens(backend, text, stride)[0]


def score_tokens(backend: Backend, text: str, stride: int | None = None):
    """The text's TextScore and every token's natural-log probability (a float64 tensor)."""
    if not text:
        raise UserError("the text is empty: nothing to score")
    ids = backend.encode(text)
    if not ids:
        raise UserError("the text encodes to zero tokens: nothing to score")
    try:
        logprobs = backend.token_logprobs(ids, stride=stride)
    except ValueError as exc:  # a stride the model's window cannot take
        raise UserError(f"{backend.spec}: {exc}") from None
    score = TextScore(model=backend.spec, implementation=backend.implementation, tokens=len(ids),
                      bytes=len(text.encode("utf-8")), chars=len(text), logprob_nats=float(logprobs.sum()))
    return score, logprobs
