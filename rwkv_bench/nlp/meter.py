"""Counting the work an lm-eval model does, per request type: ours counts itself, lm-eval's `hf` model
(HFLM) is counted from outside through public seams (`attach_meter`). `Counts` says what each number counts.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..trackers import latency
from ..library_internals import reencode_positions

REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")


@dataclass
class Counts:
    """The work of one request type."""
    requests: int = 0               # requests lm-eval handed the model
    tokens_processed: int = 0       # positions the model ran, padding included
    tokens_padding: int = 0         # of which padding (rows of unequal length batched together)
    tokens_reencode: int = 0        # positions a model running every request alone, from scratch, would run
    forward_passes: int = 0         # calls of the network over a batch (each chunk of a long input counts)
    model_time_s: float = 0.0       # seconds inside the request method (tokenising included)

    def count_unshared(self, tokens: int, chunk_size: int) -> None:
        """A text run whole and alone (rolling scores, generation prompts): nothing to share or pad."""
        self.tokens_processed += tokens
        self.tokens_reencode += tokens
        self.forward_passes += -(-tokens // chunk_size)

    def count_positions(self, positions: int, padding: int = 0) -> None:
        self.tokens_processed += positions
        self.tokens_padding += padding


@dataclass
class TokenMeter:
    """Counts per request type ("loglikelihood", "loglikelihood_rolling", "generate_until")."""
    counts: dict = field(default_factory=lambda: defaultdict(Counts))
    device: object = None

    def reset(self) -> None:
        self.counts = defaultdict(Counts)

    def __getitem__(self, request_type: str) -> Counts:
        return self.counts[request_type]

    def rows(self) -> list[dict]:
        return [{"request_type": kind, **vars(c)} for kind, c in self.counts.items() if c.requests]

    def timed(self, kind: str, fn, requests, *args, **kwargs):
        """Run a request method, adding its requests and its time to `kind`."""
        try:
            with latency(self.device) as timing:
                return fn(requests, *args, **kwargs)
        finally:
            self[kind].requests += len(requests)
            self[kind].model_time_s += timing.seconds


def attach_meter(lm) -> TokenMeter:
    """Count tokens, forward passes and time on lm-eval's own `hf` model (HFLM) without changing what it
    computes:

    - a forward pre-hook on the torch module `lm.model` (torch's `register_forward_pre_hook`) sees every
      forward pass HFLM makes, scoring and generation alike: positions run = input_ids.numel() (padding
      included), passes = calls;
    - the three request methods of lm-eval's `LM` API, which lm-eval's evaluator calls by name on the model
      object, are wrapped on this one instance (the class is left alone) to time them and to know which
      request type a forward pass belongs to; re-encoding every loglikelihood request is counted from the
      requests with the model's own tokenisation (library_internals.reencode_positions).
    tests/test_nlp_vs_hf.py::test_meter_sees_hflm_work fails if an lm-eval release stops calling the model
    through these seams (no passes or no requests counted).
    """
    meter = TokenMeter(device=getattr(lm, "device", None))
    current = {"kind": "loglikelihood"}

    def count_pass(module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]  # HFLM calls model(inps) and generate(input_ids=...)
        counts = meter[current["kind"]]
        counts.forward_passes += 1
        counts.tokens_processed += int(ids.numel())
        if current["kind"] == "generate_until":
            counts.tokens_reencode += int(ids.numel())
        return None

    lm.model.register_forward_pre_hook(count_pass, with_kwargs=True)

    def wrap(kind):
        method = getattr(lm, kind)

        def counted(requests, *args, **kwargs):
            current["kind"] = kind
            if kind == "loglikelihood":
                meter[kind].tokens_reencode += reencode_positions(lm, requests)
            return meter.timed(kind, method, requests, *args, **kwargs)
        return counted

    for kind in REQUEST_TYPES:
        setattr(lm, kind, wrap(kind))
    return meter
