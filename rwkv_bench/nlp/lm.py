"""Our RWKV-4 as an lm-evaluation-harness model ("rwkv-bench"), reusing the recurrent state.

lm-eval asks three things of a model:
- `loglikelihood(context, continuation)`: multiple-choice tasks send one request per choice, all with
  the same context. An RNN's state after a context summarises it completely, so we run every distinct
  context once and score each of its continuations from a copy of that state. Contexts that share a prefix
  (few-shot examples, a shared passage) share the work for it: contexts are cut into the segments of their
  prefix tree. What makes this cheaper in time, not only in tokens (see `_score_shared`):
    * few, large forward passes: segments of different lengths run together, right-padded, and each row
      still gets exactly its own state (`_ragged_advance`), instead of one pass per distinct length;
    * contexts never pay for the head (768 x 50k at 169M, a third of the model's work per position);
      continuations pay for it, and for the log-softmax, only at real positions, never at padding;
    * continuations of one context with the same inputs (one-token choices) share one row;
    * batches are built from flat token lists and index_select of stored states, not per-request tensors.
- `loglikelihood_rolling(text)`: every token scored, the first conditioned on the end-of-text token; this
  is exactly `rwkv_bench.scoring.score_text` (RWKV has no context window to slide).
- `generate_until(context, gen_kwargs)`: greedy decoding in recurrent mode until a stop sequence, the
  end-of-text token or `max_gen_toks`.

`TokenMeter` counts the token positions the model actually ran (`tokens_processed`, padding included, of
which `tokens_padding`), the forward passes, what running every request on its own from scratch would run
(`tokens_reencode`) and the time inside the request methods (`trackers.latency`). `attach_meter` puts the same
counters on lm-eval's own `hf` model through public seams (a torch forward hook, the LM request methods).

Use it from lm-eval's own CLI with `python -m rwkv_bench.nlp.lm_eval_cli --model rwkv-bench
--model_args pretrained=SPEC ...` (SPEC as everywhere in rwkv-bench: preset, path or hub id). It runs on
CUDA when available, else on the CPU, unless `--device` says otherwise.

Data parallel: launched by torchrun or `accelerate launch --multi_gpu` (both set RANK / WORLD_SIZE /
LOCAL_RANK), the model joins the process group (`rwkv_bench.distributed`; what lm-eval gathers goes over
gloo on the CPU), reports that rank and world size to lm-eval and implements lm-eval's `all_gather` /
`gather_object` / `barrier` with torch.distributed, as lm-eval's `hf` model does with accelerate. lm-eval
then gives each rank every world_size-th document (all requests of a document, so all continuations of a
context, stay on one rank and state reuse works within the shard) and gathers the per-document metrics on
rank 0. Each rank computes on its LOCAL_RANK's GPU, or on CPU with its share of the cores. lm-eval pads the
ranks with fewer requests to equal counts by repeating the last request (DDP/FSDP need equal batches); this
model has no collective inside a forward pass, so it answers those copies without running them
(`_strip_padding`), and its counters count real requests only.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from .. import distributed
from ..errors import UserError
from ..options import parse_number, positive
from ..trackers import latency

log = logging.getLogger(__name__)

MODEL_NAME = "rwkv-bench"
DEFAULT_BATCH_SIZE = 8
MAX_BATCH_POSITIONS = 16384  # (rows x padded length) cap for one forward pass (activations B x T x 4C)
HEAD_ROWS = 2048             # positions whose logits (x 50k floats) are computed at once
PAD_BUDGET = 96              # padding positions one pass may carry (see _pack)
CONTEXT_BLOCK = 512          # contexts handled at once: their states are held until their continuations ran


# ---- token accounting ----

@dataclass
class Counts:
    requests: int = 0
    tokens_processed: int = 0     # positions the model ran, padding included
    tokens_padding: int = 0       # of which padding (rows of unequal length batched together)
    tokens_reencode: int = 0      # positions a run-every-request-from-scratch approach would run
    forward_passes: int = 0       # calls of the network over a batch (each chunk of a long input counts)
    model_time_s: float = 0.0     # time inside the request method (tokenising included)

    def count_unshared(self, tokens: int, chunk_size: int) -> None:
        """A text run whole and alone (rolling scores, generation prompts): nothing to share or pad."""
        self.tokens_processed += tokens
        self.tokens_reencode += tokens
        self.forward_passes += -(-tokens // chunk_size)


@dataclass
class TokenMeter:
    """Per request type ("loglikelihood", "loglikelihood_rolling", "generate_until") counters."""
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


REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")


def attach_meter(lm) -> TokenMeter:
    """Count tokens, forward passes and time on lm-eval's own `hf` model (HFLM) without changing what it
    computes, through public seams only:

    - a forward pre-hook on the torch module `lm.model` (torch's public `register_forward_pre_hook`) sees
      every forward pass HFLM makes, scoring and generation alike: positions run = input_ids.numel()
      (padding included), passes = calls;
    - the three request methods of lm-eval's `LM` API, which lm-eval's evaluator calls by name on the model
      object (`getattr(lm, request_type)(requests)`), are wrapped on this one instance (the class is left
      alone) to time them and to know which request type a forward pass belongs to; what re-encoding every
      loglikelihood request would run is counted from the requests with the model's own tokenisation.
    tests/test_nlp_vs_hf.py::test_meter_sees_hflm_work fails if an lm-eval release stops calling the model
    through these seams (no passes or no requests counted).
    """
    meter = TokenMeter(device=getattr(lm, "device", None))
    current = {"kind": "loglikelihood"}

    def count_pass(module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]  # HFLM calls model(inps) and generate(input_ids=...)
        positions = int(ids.numel())
        counts = meter[current["kind"]]
        counts.forward_passes += 1
        counts.tokens_processed += positions
        if current["kind"] == "generate_until":
            counts.tokens_reencode += positions
        return None

    lm.model.register_forward_pre_hook(count_pass, with_kwargs=True)

    def wrap(kind):
        method = getattr(lm, kind)

        def counted(requests, *args, **kwargs):
            current["kind"] = kind
            if kind == "loglikelihood":
                meter[kind].tokens_reencode += _reencode_positions(lm, requests)
            return meter.timed(kind, method, requests, *args, **kwargs)
        return counted

    for kind in REQUEST_TYPES:
        setattr(lm, kind, wrap(kind))
    return meter


def _reencode_positions(lm, requests) -> int:
    """Positions that running each loglikelihood request alone would run: len(context) + len(continuation)
    - 1, tokenised the way lm-eval's TemplateLM.loglikelihood does (an empty context is the prefix token)."""
    total = 0
    for context, continuation in (r.args for r in requests):
        if context == "":
            total += len(lm.tok_encode(continuation))
        else:
            ctx, cont = lm._encode_pair(context, continuation)
            total += len(ctx) + len(cont) - 1
    return total


# ---- the model ----

def pick_device(device: str | None) -> str:
    """The device to run on: CUDA when available, else the CPU, unless told. lm-eval's CLI asks for
    "cuda:0" when --device is not given, so on a machine without CUDA a plain "cuda"/"cuda:0" falls back to
    the CPU (with a warning) instead of failing, as lm-eval's own hf model does; another cuda:N fails."""
    import torch

    if device is None or str(device).strip() == "":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device).strip()
    if device in ("cuda", "cuda:0") and not torch.cuda.is_available():
        log.warning("device %r requested but CUDA is not available: running on the CPU", device)
        return "cpu"
    return device


def parse_batch_size(value) -> int:
    if value is None or str(value).startswith("auto"):
        return DEFAULT_BATCH_SIZE
    return positive(parse_number(value, "batch_size", int), "batch_size")


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


def _ragged_advance(model, tokens: torch.Tensor, lengths: torch.Tensor, state: torch.Tensor) -> None:
    """Run right-padded rows (B, T) of different lengths through `model` in ONE batched pass, leaving in
    `state` (n_layer, 5, B, C), updated in place, each row's state after its own `lengths[b]` tokens
    (RWKV4.hidden with `lengths`: every matrix product batched, the WKV per group of equal lengths)."""
    model.hidden(tokens, state, recurrent=False, lengths=lengths)


def _pack(lengths: list[int], max_rows: int, max_positions: int) -> list[list[int]]:
    """Indices into `lengths`, longest first, cut into batches for right-padded passes: at most `max_rows`
    rows and `max_positions` padded positions per batch, and at most PAD_BUDGET padding positions, about
    what one more pass costs on a CPU (where a pass is compute-bound: padding is paid in full)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    padding = 0
    for i in order:
        if batches:
            batch = batches[-1]
            longest = lengths[batch[0]]
            extra = longest - lengths[i]
            if len(batch) < max_rows and (len(batch) + 1) * longest <= max_positions and \
                    padding + extra <= PAD_BUDGET:
                batch.append(i)
                padding += extra
                continue
        batches.append([i])
        padding = 0
    return batches


def _right_padded(seqs: list, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token lists -> (tokens (B, T) right-padded with 0, lengths (B,), mask (B, T) of real positions),
    built with one tensor for all tokens (no per-row tensors)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    T = int(lengths.max())
    mask = torch.arange(T)[None, :] < lengths[:, None]
    tokens = torch.zeros(len(seqs), T, dtype=torch.long)
    tokens[mask] = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
    return tokens.to(device), lengths.to(device), mask.to(device)


@register_model(MODEL_NAME)
class RWKVBenchLM(TemplateLM):
    """lm-eval model for rwkv-bench's RWKV-4 (any spec `rwkv_bench.backends.resolve` turns into our RWKV).

    model_args: pretrained=SPEC (required unless `backend` is given), tokenizer=, dtype=float32,
    chunk_size=1024, state_reuse=true (false: every request from scratch, for checking), max_gen_toks=256;
    batch_size (rows per forward pass: context segments or continuations) and device (default: cuda when
    available, else cpu) come from lm-eval's own flags.
    """

    def __init__(self, pretrained: str | None = None, *, backend=None, tokenizer: str | None = None,
                 device: str | None = None, dtype: str = "float32", batch_size=DEFAULT_BATCH_SIZE,
                 max_batch_size=None, chunk_size: int = 1024, state_reuse=True, max_gen_toks: int = 256,
                 seed: int = 0, **unused):
        super().__init__()
        if unused:
            log.warning("rwkv-bench model ignores model_args %s", sorted(unused))
        # torchrun / accelerate launch: join the process group (once), take this rank's cores or GPU
        self.dist = distributed.init() if distributed.from_env().enabled else distributed.Dist()
        self._rank, self._world_size = self.dist.rank, self.dist.world_size
        if backend is None:
            if not pretrained:
                raise UserError("rwkv-bench needs pretrained=SPEC (a preset such as rwkv4-169m, a path or a hub id)")
            from ..options import parse_device, parse_dtype
            from ..backends import resolve

            device = distributed.device_for(pick_device(device), self.dist)
            backend = resolve(str(pretrained), device=parse_device(device), dtype=parse_dtype(dtype),
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
        self.meter = TokenMeter(device=self._device)

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

    # -- lm-eval's data-parallel contract (used by its evaluator when world_size > 1) --

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's tensor, concatenated along dim 0 in rank order (a 0-d tensor counts as one element).
        lm-eval gathers only request counts this way: they travel over gloo on the CPU, so ranks that share a
        GPU (more ranks than GPUs, which NCCL refuses) work too."""
        if not self.dist.enabled:
            return tensor
        import torch.distributed as tdist

        local = tensor.detach().cpu()
        local = local.reshape(1) if local.dim() == 0 else local.contiguous()
        out = [torch.empty_like(local) for _ in range(self.dist.world_size)]
        tdist.all_gather(out, local)
        return torch.cat(out).to(tensor.device)

    def gather_object(self, obj, dst: int = 0):
        return distributed.gather_objects(obj, self.dist, dst=dst)

    def barrier(self) -> None:
        distributed.barrier(self.dist)

    def _strip_padding(self, requests) -> tuple[list, int]:
        """`requests` without the copies lm-eval appends to even out the ranks (the last request repeated
        beyond its own `repeats`), and how many there were. Without a process group there are none."""
        requests = list(requests)
        if not self.dist.enabled or not requests:
            return requests, 0
        last = requests[-1]
        run = 0
        while run < len(requests) and requests[-1 - run] is last:
            run += 1
        extra = max(0, run - max(1, int(getattr(last, "repeats", 1) or 1)))
        return requests[:len(requests) - extra], extra

    def _unpadded(self, kind: str, method, requests, disable_tqdm: bool):
        real, extra = self._strip_padding(requests)
        out = self.meter.timed(kind, method, real, disable_tqdm=disable_tqdm)
        return list(out) + [out[-1]] * extra if extra else out

    def _run(self, tokens: torch.Tensor, state, *, last_only: bool = False):
        return self.model(tokens.to(self.device), state, chunk_size=self.chunk_size, last_only=last_only)

    def _tensor(self, ids) -> torch.Tensor:
        return torch.tensor([list(ids)], dtype=torch.long, device=self.device)

    # -- loglikelihood --

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._unpadded("loglikelihood", super().loglikelihood, requests, disable_tqdm)

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

        Contexts are cut into the segments of their prefix tree (`_prefix_segments`); the segments run in
        waves (every segment whose parent state is ready), packed into few right-padded passes of rows of
        different lengths whose states come out exact (`_ragged_advance`), with no head at all. A context
        runs up to its last token only; that token goes into the continuation pass, where it predicts the
        first continuation token together with all the others. Continuations of one context whose inputs
        are the same (all one-token choices, say) share one row and differ only in the targets read from it.
        Continuation passes compute the head and the log-softmax only at real positions, never at padding.
        """
        contexts = sorted(by_context)
        for first in range(0, len(contexts), CONTEXT_BLOCK):   # bounds the states held at once
            block = contexts[first:first + CONTEXT_BLOCK]
            segments, context_node = _prefix_segments(block)
            store, where = self._run_segments(segments)
            rows: dict[tuple, int] = {}          # (context, inputs) -> row
            refs, inputs, members = [], [], []   # per row; members: [(context, continuation)]
            for ctx in block:
                node = context_node[ctx]
                for cont in by_context[ctx]:
                    row_inputs = (ctx[-1], *cont[:-1])
                    row = rows.setdefault((ctx, row_inputs), len(refs))
                    if row == len(refs):
                        refs.append(where[node] if node >= 0 else None)
                        inputs.append(row_inputs)
                        members.append([])
                    members[row].append((ctx, cont))
            self._score_continuations(store, refs, inputs, members, results)
            pbar.update(len(block))

    def _gather_states(self, store: list[torch.Tensor], refs: list) -> torch.Tensor:
        """refs[b] = (index into `store`, row) of a state, or None for the empty state -> (n_layer, 5, B, C),
        a fresh tensor (one index_select per stored pass, not one slice per row)."""
        groups: dict[int, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for b, ref in enumerate(refs):
            positions, rows = groups[-1 if ref is None else ref[0]]
            positions.append(b)
            rows.append(0 if ref is None else ref[1])
        pieces, order = [], []
        for source, (positions, rows) in groups.items():
            if source < 0:
                pieces.append(self.model.init_state(len(rows)))
            else:
                pieces.append(store[source].index_select(2, torch.tensor(rows, device=self.device)))
            order.extend(positions)
        state = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
        if order != sorted(order):
            state = state.index_select(2, torch.tensor(order, device=self.device).argsort())
        return state

    def _run_segments(self, segments: list[tuple[int, tuple]]) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """segments[i] = (parent index or -1 for the empty state, tokens); returns the states of its passes
        (n_layer, 5, rows, C) and where each segment's end state is kept: (index into those, row)."""
        counts = self.meter["loglikelihood"]
        store: list[torch.Tensor] = []
        where: list[tuple[int, int] | None] = [None] * len(segments)
        todo = list(range(len(segments)))
        while todo:
            ready = [i for i in todo if segments[i][0] < 0 or where[segments[i][0]] is not None]
            for batch in _pack([len(segments[i][1]) for i in ready], self.batch_size, MAX_BATCH_POSITIONS):
                ids = [ready[j] for j in batch]
                seqs = [segments[i][1] for i in ids]
                state = self._gather_states(store, [where[segments[i][0]] if segments[i][0] >= 0 else None
                                                    for i in ids])
                tokens, lengths, _ = _right_padded(seqs, self.device)
                for start in range(0, tokens.shape[1], self.chunk_size):
                    self._advance_chunk(tokens, lengths, state, start)
                    counts.forward_passes += 1
                counts.tokens_processed += tokens.numel()
                counts.tokens_padding += tokens.numel() - int(lengths.sum())
                store.append(state)
                for row, i in enumerate(ids):
                    where[i] = (len(store) - 1, row)
            done = set(ready)
            todo = [i for i in todo if i not in done]
        return store, where

    def _advance_chunk(self, tokens: torch.Tensor, lengths: torch.Tensor, state: torch.Tensor, start: int):
        """Positions [start, start + chunk_size) of the rows still running there, state carried in place."""
        end = min(start + self.chunk_size, tokens.shape[1])
        if start == 0 and end == tokens.shape[1]:
            _ragged_advance(self.model, tokens, lengths, state)
            return
        active = (lengths > start).nonzero()[:, 0]
        sub = state.index_select(2, active)
        _ragged_advance(self.model, tokens[active, start:end], (lengths[active] - start).clamp(max=end - start), sub)
        state[:, :, active] = sub

    def _score_continuations(self, store, refs, inputs, members, results: dict) -> None:
        """Score every continuation from its context's state: rows packed by length (states gathered along
        the batch dimension, inputs right-padded: RWKV is causal, so padding after a row cannot change its
        outputs); the head and log-softmax run only at real positions, where every input predicts a
        continuation token."""
        counts = self.meter["loglikelihood"]
        for batch in _pack([len(x) for x in inputs], self.batch_size, MAX_BATCH_POSITIONS):
            tokens, lengths, mask = _right_padded([inputs[i] for i in batch], self.device)
            state = self._gather_states(store, [refs[i] for i in batch])
            # hidden states at the real positions, row-major (row b's positions start at offset[b])
            hidden = torch.empty(int(lengths.sum()), self.model.config.n_embd, device=self.device,
                                 dtype=self.model.emb.weight.dtype)
            flat = mask.flatten().cumsum(0).view_as(mask) - 1
            for start in range(0, tokens.shape[1], self.chunk_size):
                end = min(start + self.chunk_size, tokens.shape[1])
                x = self.model.hidden(tokens[:, start:end], state, recurrent=False)
                counts.forward_passes += 1
                chunk_mask = mask[:, start:end]
                hidden[flat[:, start:end][chunk_mask]] = x[chunk_mask]
            counts.tokens_processed += tokens.numel()
            counts.tokens_padding += tokens.numel() - hidden.shape[0]
            # one element per (continuation, target token): the position that predicts it
            offsets = [0]
            for i in batch:
                offsets.append(offsets[-1] + len(inputs[i]))
            keys, el_pos, el_tgt, el_who = [], [], [], []
            for b, i in enumerate(batch):
                for key in members[i]:
                    targets = key[1]                    # the continuation's tokens
                    el_pos.extend(range(offsets[b], offsets[b] + len(targets)))
                    el_tgt.extend(targets)
                    el_who.extend([len(keys)] * len(targets))
                    keys.append(key)
            el_pos, el_tgt, el_who = (torch.tensor(v, dtype=torch.long, device=self.device)
                                      for v in (el_pos, el_tgt, el_who))
            logp_sum = torch.zeros(len(keys), dtype=torch.float64, device=self.device)
            misses = torch.zeros(len(keys), dtype=torch.long, device=self.device)
            for h in range(0, hidden.shape[0], HEAD_ROWS):
                logits = self.model.logits(hidden[h:h + HEAD_ROWS]).float()
                sel = ((el_pos >= h) & (el_pos < h + HEAD_ROWS)).nonzero()[:, 0]
                pos, tgt, who = el_pos[sel] - h, el_tgt[sel], el_who[sel]
                lp = logits[pos, tgt] - torch.logsumexp(logits, dim=-1)[pos]
                logp_sum.index_add_(0, who, lp.double())
                misses.index_add_(0, who, (logits.argmax(-1)[pos] != tgt).long())
            for key, lp, miss in zip(keys, logp_sum.tolist(), misses.tolist()):
                results[key] = (lp, miss == 0)

    def _score_from_scratch(self, ctx: tuple, cont: tuple) -> tuple[float, bool]:
        """The reference: one request, context + continuation[:-1] run from the empty state."""
        inputs = ctx + cont[:-1]
        logits, _ = self._run(self._tensor(inputs), None)
        self.meter["loglikelihood"].tokens_processed += len(inputs)
        self.meter["loglikelihood"].forward_passes += -(-len(inputs) // self.chunk_size)
        logp = F.log_softmax(logits[0, len(ctx) - 1:].float(), dim=-1)
        target = torch.tensor(cont, device=logp.device)
        token_lp = logp.gather(-1, target[:, None])[:, 0]
        return float(token_lp.double().sum()), bool((logp.argmax(-1) == target).all())

    # -- loglikelihood_rolling --

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._unpadded("loglikelihood_rolling", self._rolling, requests, disable_tqdm)

    def _rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The whole text in one pass (chunked, state carried): the same numbers as `rwkv-bench score`."""
        counts = self.meter["loglikelihood_rolling"]
        out = []
        for (string,) in tqdm([r.args for r in requests], disable=disable_tqdm, desc="rwkv-bench rolling"):
            ids = self.tok_encode(string)
            total = float(self.backend.token_logprobs(ids).sum()) if ids else 0.0
            counts.count_unshared(len(ids), self.chunk_size)
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return out

    # -- generate_until --

    def generate_until(self, requests, disable_tqdm: bool = False):
        return self._unpadded("generate_until", self._generate, requests, disable_tqdm)

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
            counts.count_unshared(len(ids), self.chunk_size)
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
            counts.forward_passes += 1
        for r, (i, _, until, _) in enumerate(rows):
            yield i, postprocess_generated_text(texts[r], until, None)
