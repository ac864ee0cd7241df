"""Our RWKV-4 as an lm-evaluation-harness model ("rwkv-bench"), reusing the recurrent state.

lm-eval asks three things of a model:
- `loglikelihood(context, continuation)`: multiple-choice tasks send one request per choice, all with
  the same context. An RNN's state after a context summarises it completely, so we run every distinct
  context once and score each of its continuations from a copy of that state (continuations of several
  contexts are batched by concatenating their states along the batch dimension). Contexts that share a
  prefix (few-shot examples, a shared passage) share the work for it: contexts are cut into the segments
  of their prefix tree, and segments run in batches (see `_score_shared`).
- `loglikelihood_rolling(text)`: every token scored, the first conditioned on the end-of-text token; this
  is exactly `rwkv_bench.scoring.score_text` (RWKV has no context window to slide).
- `generate_until(context, gen_kwargs)`: greedy decoding in recurrent mode until a stop sequence, the
  end-of-text token or `max_gen_toks`.

`TokenMeter` counts the token positions the model actually ran (`tokens_processed`, padding included)
next to what running every request on its own from scratch would run (`tokens_reencode`), and the time
spent. `attach_meter` puts the same counters on lm-eval's own `hf` model, for the comparison.

Use it from lm-eval's own CLI with `python -m rwkv_bench.nlp.lm_eval_cli --model rwkv-bench
--model_args pretrained=SPEC ...` (SPEC as everywhere in rwkv-bench: preset, path or hub id).
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from ..errors import UserError

log = logging.getLogger(__name__)

MODEL_NAME = "rwkv-bench"
DEFAULT_BATCH_SIZE = 8
MAX_BATCH_POSITIONS = 8192   # (batch x length) cap for one continuation forward: logits are B x T x 50k floats
SEGMENT_BATCH = 64           # context segments of equal length run together (no logits: activations only)
CONTEXT_BLOCK = 512          # contexts handled at once: their states are held until their continuations ran


# ---- token accounting ----

@dataclass
class Counts:
    requests: int = 0
    tokens_processed: int = 0     # positions the model ran, padding included
    tokens_padding: int = 0       # of which padding (batched continuations of unequal length)
    tokens_reencode: int = 0      # positions a run-every-request-from-scratch approach would run
    model_time_s: float = 0.0     # time inside the request method (tokenising included)


@dataclass
class TokenMeter:
    """Per request type ("loglikelihood", "loglikelihood_rolling", "generate_until") counters."""
    counts: dict = field(default_factory=lambda: defaultdict(Counts))

    def reset(self) -> None:
        self.counts = defaultdict(Counts)

    def __getitem__(self, request_type: str) -> Counts:
        return self.counts[request_type]

    def rows(self) -> list[dict]:
        return [{"request_type": kind, **vars(c)} for kind, c in self.counts.items() if c.requests]


def _timed(meter: TokenMeter, kind: str, fn, requests, *args, **kwargs):
    start = time.perf_counter()
    try:
        return fn(requests, *args, **kwargs)
    finally:
        meter[kind].requests += len(requests)
        meter[kind].model_time_s += time.perf_counter() - start


def attach_meter(lm) -> TokenMeter:
    """Count tokens and time on lm-eval's own `hf` model (HFLM) without changing what it computes.

    `_model_call` sees every forward pass (batch x padded length = positions run, padding included);
    `_loglikelihood_tokens` sees the tokenised requests (each request alone would run len(context) +
    len(continuation) - 1 positions); `_model_generate` sees prompt and generated tokens (KV cache).
    """
    meter = TokenMeter()
    model_call, ll_tokens, generate = lm._model_call, lm._loglikelihood_tokens, lm._model_generate
    methods = {kind: getattr(lm, kind) for kind in ("loglikelihood", "loglikelihood_rolling", "generate_until")}
    state = {"kind": "loglikelihood"}

    def counted_call(inps, *args, **kwargs):
        meter[state["kind"]].tokens_processed += int(inps.numel())
        return model_call(inps, *args, **kwargs)

    def counted_ll_tokens(requests, *args, **kwargs):
        meter[state["kind"]].tokens_reencode += sum(len(c) + len(x) - 1 for _, c, x in requests)
        return ll_tokens(requests, *args, **kwargs)

    def counted_generate(context, *args, **kwargs):
        out = generate(context, *args, **kwargs)
        n = int(context.numel()) + (out.shape[1] - context.shape[1]) * context.shape[0]
        meter["generate_until"].tokens_processed += n
        meter["generate_until"].tokens_reencode += n
        return out

    def wrap(kind):
        def method(requests, *args, **kwargs):
            state["kind"] = kind
            return _timed(meter, kind, methods[kind], requests, *args, **kwargs)
        return method

    lm._model_call, lm._loglikelihood_tokens, lm._model_generate = counted_call, counted_ll_tokens, counted_generate
    for kind in methods:
        setattr(lm, kind, wrap(kind))
    return meter


# ---- the model ----

def parse_batch_size(value) -> int:
    if value is None or str(value).startswith("auto"):
        return DEFAULT_BATCH_SIZE
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise UserError(f"batch_size must be a positive integer or 'auto', got {value!r}") from None
    if size < 1:
        raise UserError(f"batch_size must be a positive integer, got {value!r}")
    return size


def parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UserError(f"expected true or false, got {value!r}")


def common_prefix(a: tuple, b: tuple) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _prefix_segments(contexts: list[tuple]) -> tuple[list[tuple[int, tuple]], dict[tuple, int]]:
    """The prefix tree of sorted contexts, cut where a later context branches off and before each context's
    last token. Returns segments [(parent segment index or -1 for the empty state, tokens)] and, per
    context, the index of the segment that ends at its last token but one (-1: the empty state)."""
    segments: list[tuple[int, tuple]] = []
    context_node: dict[tuple, int] = {}
    # lcp[i] = tokens context i shares with context i-1 (sorted order puts prefix-sharers together)
    lcp = [0] + [common_prefix(contexts[i - 1], contexts[i]) for i in range(1, len(contexts))]
    stack: list[tuple[int, int]] = [(0, -1)]   # (prefix length, segment ending there), lengths increasing
    for i, ctx in enumerate(contexts):
        start = lcp[i]
        while stack[-1][0] > start:
            stack.pop()
        assert stack[-1][0] == start, "state for a shared prefix went missing"
        # where later contexts branch off ctx: the running minima of the lcp's that follow, above `start`
        branches, low = set(), len(ctx) + 1
        for j in range(i + 1, len(contexts)):
            low = min(low, lcp[j])
            if low <= start:
                break
            branches.add(low)
        last = len(ctx) - 1
        node, pos = stack[-1][1], start
        context_node[ctx] = node                       # when last == start: the state at the branch point
        for cut in sorted(branches | ({last} if last > start else set())):
            segments.append((node, tuple(ctx[pos:cut])))
            node, pos = len(segments) - 1, cut
            if cut in branches:
                stack.append((cut, node))
            if cut == last:
                context_node[ctx] = node
    return segments, context_node


@dataclass
class _Pending:
    """A continuation waiting to be scored from its context's state."""
    key: tuple           # (context, continuation) tokens
    state: torch.Tensor  # (n_layer, 5, 1, C) after the context minus its last token
    inputs: list[int]    # the context's last token + continuation[:-1]: the inputs that predict...
    targets: list[int]   # ...every continuation token


@register_model(MODEL_NAME)
class RWKVBenchLM(TemplateLM):
    """lm-eval model for rwkv-bench's RWKV-4 (any spec `rwkv_bench.specs.resolve` turns into our RWKV).

    model_args: pretrained=SPEC (required unless `backend` is given), tokenizer=, dtype=float32,
    chunk_size=1024, state_reuse=true (false: every request from scratch, for checking), max_gen_toks=256;
    batch_size (continuations per forward) and device come from lm-eval's own flags.
    """

    def __init__(self, pretrained: str | None = None, *, backend=None, tokenizer: str | None = None,
                 device: str | None = "cpu", dtype: str = "float32", batch_size=DEFAULT_BATCH_SIZE,
                 max_batch_size=None, chunk_size: int = 1024, state_reuse=True, max_gen_toks: int = 256,
                 seed: int = 0, **unused):
        super().__init__()
        if unused:
            log.warning("rwkv-bench model ignores model_args %s", sorted(unused))
        if backend is None:
            if not pretrained:
                raise UserError("rwkv-bench needs pretrained=SPEC (a preset such as rwkv4-169m, a path or a hub id)")
            from ..commands import parse_device, parse_dtype
            from ..specs import resolve

            backend = resolve(str(pretrained), device=parse_device(device or "cpu"), dtype=parse_dtype(dtype),
                              tokenizer=tokenizer, chunk_size=int(chunk_size), seed=int(seed))
        from ..backends.rwkv import RWKVBackend

        if not isinstance(backend, RWKVBackend):
            raise UserError(f"{backend.spec!r} is a {backend.family} model run by {backend.implementation}; the "
                            f"{MODEL_NAME} model runs RWKV-4 only: use lm-eval's --model hf for it")
        self.backend = backend
        self.model = backend.model
        self.tokenizer = backend.tokenizer
        self._device = backend.device
        self.chunk_size = backend.chunk_size
        self.batch_size = parse_batch_size(batch_size)
        self.state_reuse = parse_bool(state_reuse)
        self._max_gen_toks = int(max_gen_toks)
        self.meter = TokenMeter()

    # -- what lm-eval reads --

    @property
    def eot_token_id(self) -> int:
        return self.backend.bos_token_id  # <|endoftext|> (token 0) for RWKV-4 Pile models

    @property
    def max_length(self) -> int:
        return 1 << 30  # no context window: the state carries everything

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.backend.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(list(tokens))

    def get_model_info(self) -> dict:
        return {"rwkv_bench": {**self.backend.describe(), "state_reuse": self.state_reuse,
                               "batch_size": self.batch_size, "chunk_size": self.chunk_size}}

    def _run(self, tokens: torch.Tensor, state, *, last_only: bool = False):
        return self.model(tokens.to(self.device), state, chunk_size=self.chunk_size, last_only=last_only)

    def _tensor(self, ids) -> torch.Tensor:
        return torch.tensor([list(ids)], dtype=torch.long, device=self.device)

    # -- loglikelihood --

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return _timed(self.meter, "loglikelihood", super().loglikelihood, requests, disable_tqdm=disable_tqdm)

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """requests: [((context, continuation) strings, context tokens, continuation tokens)]."""
        counts = self.meter["loglikelihood"]
        results: dict[tuple, tuple[float, bool]] = {}
        by_context: dict[tuple, list[tuple]] = defaultdict(list)
        for _, ctx, cont in requests:
            ctx, cont = tuple(ctx), tuple(cont)
            if not ctx:
                raise ValueError("empty context: lm-eval should have put the end-of-text token there")
            counts.tokens_reencode += len(ctx) + len(cont) - 1
            if not cont:
                results[(ctx, cont)] = (0.0, True)
            elif (ctx, cont) not in results:
                results[(ctx, cont)] = None
                by_context[ctx].append(cont)
        if self.state_reuse:
            pbar = tqdm(total=len(by_context), disable=disable_tqdm, desc="rwkv-bench loglikelihood (contexts)")
            self._score_shared(by_context, results, pbar)
            pbar.close()
        out = []
        for request_str, ctx, cont in tqdm(requests, disable=disable_tqdm or self.state_reuse,
                                           desc="rwkv-bench loglikelihood (from scratch)"):
            if self.state_reuse or not cont:
                answer = results[(tuple(ctx), tuple(cont))]
            else:
                answer = self._score_from_scratch(tuple(ctx), tuple(cont))
            out.append(answer)
            if request_str is not None:
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return out

    def _score_shared(self, by_context: dict, results: dict, pbar) -> None:
        """Each distinct context once, contexts that share a prefix sharing its work, then every continuation
        from a copy of its context's state.

        On a CPU a small model's forward pass costs about the same for 1 or 50 tokens (reading the weights
        dominates), so the number of passes matters as much as the number of tokens. Contexts are therefore
        cut into the segments of their prefix tree (`_prefix_segments`) and the segments run in waves: every
        segment whose parent state is ready joins the wave, and segments of equal length run as one batch
        (states concatenated along the batch dimension: exact, no padding). A context runs up to its last
        token only; that token goes into the continuation batch, where it predicts the first continuation
        token together with all the others, so contexts never pay for the head.
        """
        contexts = sorted(by_context)
        for first in range(0, len(contexts), CONTEXT_BLOCK):   # bounds the states held at once
            block = contexts[first:first + CONTEXT_BLOCK]
            segments, context_node = _prefix_segments(block)
            states = self._run_segments(segments)
            empty = self.model.init_state(1)
            pending = [_Pending((ctx, cont), states[context_node[ctx]] if context_node[ctx] >= 0 else empty,
                                [ctx[-1], *cont[:-1]], list(cont))
                       for ctx in block for cont in by_context[ctx]]
            self._flush(pending, results)
            pbar.update(len(block))

    def _run_segments(self, segments: list[tuple[int, tuple]]) -> list[torch.Tensor]:
        """segments[i] = (parent index or -1 for the empty state, tokens); returns the state after each."""
        counts = self.meter["loglikelihood"]
        states: list[torch.Tensor | None] = [None] * len(segments)
        todo = list(range(len(segments)))
        while todo:
            ready = [i for i in todo if segments[i][0] < 0 or states[segments[i][0]] is not None]
            by_length: dict[int, list[int]] = defaultdict(list)
            for i in ready:
                by_length[len(segments[i][1])].append(i)
            for length, group in by_length.items():
                for b in range(0, len(group), SEGMENT_BATCH):
                    rows = group[b:b + SEGMENT_BATCH]
                    parents = [states[segments[i][0]] if segments[i][0] >= 0 else self.model.init_state(1)
                               for i in rows]
                    tokens = torch.tensor([segments[i][1] for i in rows], dtype=torch.long, device=self.device)
                    state = self.model.advance(tokens, torch.cat(parents, dim=2), chunk_size=self.chunk_size)
                    counts.tokens_processed += len(rows) * length
                    for r, i in enumerate(rows):
                        states[i] = state[:, :, r:r + 1]
            done = set(ready)
            todo = [i for i in todo if i not in done]
        return states

    def _flush(self, pending: list[_Pending], results: dict) -> None:
        """Score the continuations' remaining tokens, batched: states concatenated along the batch dim,
        inputs right-padded (RWKV is causal: padding after a sequence cannot change its outputs)."""
        counts = self.meter["loglikelihood"]
        pending = sorted(pending, key=lambda p: len(p.inputs))
        batch: list[_Pending] = []
        for item in pending + [None]:
            if item is not None and len(batch) < self.batch_size and \
                    (len(batch) + 1) * len(item.inputs) <= max(MAX_BATCH_POSITIONS, len(item.inputs)):
                batch.append(item)
                continue
            if batch:
                T = max(len(p.inputs) for p in batch)
                tokens = torch.zeros(len(batch), T, dtype=torch.long)
                for b, p in enumerate(batch):
                    tokens[b, :len(p.inputs)] = torch.tensor(p.inputs)
                state = torch.cat([p.state for p in batch], dim=2)
                logits, _ = self._run(tokens, state)
                counts.tokens_processed += len(batch) * T
                counts.tokens_padding += sum(T - len(p.inputs) for p in batch)
                logp = F.log_softmax(logits.float(), dim=-1)
                for b, p in enumerate(batch):
                    n = len(p.targets)
                    target = torch.tensor(p.targets, device=logp.device)
                    token_lp = logp[b, :n].gather(-1, target[:, None])[:, 0]
                    greedy = bool((logp[b, :n].argmax(-1) == target).all())
                    results[p.key] = (float(token_lp.double().sum()), greedy)
            batch = [item] if item is not None else []

    def _score_from_scratch(self, ctx: tuple, cont: tuple) -> tuple[float, bool]:
        """The reference: one request, context + continuation[:-1] run from the empty state."""
        inputs = ctx + cont[:-1]
        logits, _ = self._run(self._tensor(inputs), None)
        self.meter["loglikelihood"].tokens_processed += len(inputs)
        logp = F.log_softmax(logits[0, len(ctx) - 1:].float(), dim=-1)
        target = torch.tensor(cont, device=logp.device)
        token_lp = logp.gather(-1, target[:, None])[:, 0]
        return float(token_lp.double().sum()), bool((logp.argmax(-1) == target).all())

    # -- loglikelihood_rolling --

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return _timed(self.meter, "loglikelihood_rolling", self._rolling, requests, disable_tqdm=disable_tqdm)

    def _rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The whole text in one pass (chunked, state carried): the same numbers as `rwkv-bench score`."""
        counts = self.meter["loglikelihood_rolling"]
        out = []
        for (string,) in tqdm([r.args for r in requests], disable=disable_tqdm, desc="rwkv-bench rolling"):
            ids = self.tok_encode(string)
            total = float(self.backend.token_logprobs(ids).sum()) if ids else 0.0
            counts.tokens_processed += len(ids)
            counts.tokens_reencode += len(ids)
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return out

    # -- generate_until --

    def generate_until(self, requests, disable_tqdm: bool = False):
        return _timed(self.meter, "generate_until", self._generate, requests, disable_tqdm=disable_tqdm)

    @torch.no_grad()
    def _generate(self, requests, disable_tqdm: bool = False) -> list[str]:
        from lm_eval.models.utils import handle_stop_sequences

        args = [r.args for r in requests]
        out: list[str | None] = [None] * len(args)
        eos = self.tok_decode([self.eot_token_id])
        warned = False
        pbar = tqdm(total=len(args), disable=disable_tqdm, desc="rwkv-bench generate_until")
        for start in range(0, len(args), self.batch_size):
            rows = []
            for i in range(start, min(start + self.batch_size, len(args))):
                context, gen_kwargs = args[i]
                kwargs = dict(gen_kwargs or {})
                if kwargs.get("do_sample") and not warned:
                    log.warning("rwkv-bench decodes greedily; do_sample/temperature are ignored")
                    warned = True
                until = handle_stop_sequences(kwargs.get("until"), eos=eos)
                max_new = int(kwargs.get("max_gen_toks") or kwargs.get("max_new_tokens") or self.max_gen_toks)
                rows.append((i, context, until, max_new))
            for i, text in self._generate_batch(rows):
                out[i] = text
                self.cache_hook.add_partial("generate_until", args[i], text)
                pbar.update(1)
        pbar.close()
        return out

    def _generate_batch(self, rows):
        """Prefill each prompt (parallel mode), then decode the batch one token per step (recurrent mode),
        dropping rows from the batch as they finish."""
        from lm_eval.models.utils import postprocess_generated_text

        counts = self.meter["generate_until"]
        states, last = [], []
        for _, context, _, _ in rows:
            ids = self.tok_encode(context) or [self.eot_token_id]
            logits, state = self._run(self._tensor(ids), None, last_only=True)
            counts.tokens_processed += len(ids)
            counts.tokens_reencode += len(ids)
            states.append(state)
            last.append(logits[0, -1])
        state, logits = torch.cat(states, dim=2), torch.stack(last)
        generated = [[] for _ in rows]
        active = list(range(len(rows)))
        texts = [""] * len(rows)
        while active:
            next_tokens = logits.argmax(-1).tolist()
            keep = []
            for slot, r in enumerate(active):
                token = next_tokens[slot]
                _, _, until, max_new = rows[r]
                if token == self.eot_token_id:
                    continue
                generated[r].append(token)
                texts[r] = self.tok_decode(generated[r])
                if any(s and s in texts[r] for s in until) or len(generated[r]) >= max_new:
                    continue
                keep.append(slot)
            if not keep:
                break
            index = torch.tensor(keep, device=self.device)
            active = [active[s] for s in keep]
            tokens = torch.tensor([[generated[r][-1]] for r in active], dtype=torch.long)
            logits, state = self.model(tokens.to(self.device), state.index_select(2, index), mode="recurrent")
            logits = logits[:, -1]
            counts.tokens_processed += len(active)
            counts.tokens_reencode += len(active)
        for r, (i, _, until, _) in enumerate(rows):
            yield i, postprocess_generated_text(texts[r], until, None)
