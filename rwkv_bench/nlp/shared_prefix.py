"""Scoring loglikelihood requests with any RecurrentLM, each distinct context run once and contexts that
share a prefix sharing its work. Only models/recurrent.py's interface is used (hidden, logits, rows of a
state), so RWKV-4 and RWKV-7 run here alike.

An RNN's state after a context summarises it completely: every continuation of a context is scored from a
copy of that state. What makes this cheaper in time, not only in tokens:
  * contexts are cut into the segments of their prefix tree (prefix_batches.prefix_segments), run in waves
    (every segment whose parent state is ready), packed into few right-padded passes of rows of different
    lengths whose states come out exact (the model's `hidden(..., lengths=)`);
  * contexts never pay for the head (768 x 50k at 169M, a third of the model's work per position); a
    context runs up to its last token but one, and that token goes into the continuation pass, where it
    predicts the first continuation token together with all the others;
  * continuations pay for the head and the log-softmax only at real positions, never at padding;
  * continuations of one context with the same inputs (one-token choices) share one row and differ only in
    the targets read from it;
  * batches are built from flat token lists and row selections of stored states, not per-request tensors.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F

from ..models.recurrent import RecurrentLM
from .meter import Counts
from .prefix_batches import pack, prefix_segments, right_padded

MAX_BATCH_POSITIONS = 16384  # (rows x padded length) cap for one forward pass
HEAD_ROWS = 2048             # positions whose logits (x vocabulary floats) are computed at once
CONTEXT_BLOCK = 512          # contexts handled at once: their states are held until their continuations ran

Request = tuple[tuple, tuple]          # (context tokens, continuation tokens)
StateRef = tuple[int, int] | None      # (index of a stored pass, row in it); None: the empty state


class SharedPrefixScorer:
    def __init__(self, model: RecurrentLM, *, device, batch_size: int, chunk_size: int, counts: Counts):
        self.model, self.device = model, device
        self.batch_size, self.chunk_size = batch_size, chunk_size
        self.counts = counts

    def score(self, by_context: dict[tuple, list[tuple]], progress=None) -> dict[Request, tuple[float, bool]]:
        """{context: [continuation]} (non-empty contexts and continuations) -> {(context, continuation):
        (log-likelihood in nats, whether greedy decoding produces the continuation)}."""
        results: dict[Request, tuple[float, bool]] = {}
        contexts = sorted(by_context)
        for first in range(0, len(contexts), CONTEXT_BLOCK):   # bounds the states held at once
            block = contexts[first:first + CONTEXT_BLOCK]
            segments, context_node = prefix_segments(block)
            store, where = self.run_segments(segments)
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
            results.update(self.score_continuations(store, refs, inputs, members))
            if progress is not None:
                progress.update(len(block))
        return results

    def gather_states(self, store: list[torch.Tensor], refs: list[StateRef]) -> torch.Tensor:
        """The states `refs` names, in order, as one new state (one row selection per stored pass)."""
        model = self.model
        groups: dict[int, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for b, ref in enumerate(refs):
            positions, rows = groups[-1 if ref is None else ref[0]]
            positions.append(b)
            rows.append(0 if ref is None else ref[1])
        pieces, order = [], []
        for source, (positions, rows) in groups.items():
            if source < 0:
                pieces.append(model.init_state(len(rows)))
            else:
                pieces.append(model.select_rows(store[source], self.index(rows)))
            order.extend(positions)
        state = model.cat_rows(pieces)
        if order != sorted(order):
            state = model.select_rows(state, self.index(order).argsort())
        return state

    def run_segments(self, segments: list[tuple[int, tuple]]) -> tuple[list[torch.Tensor], list[StateRef]]:
        """segments[i] = (parent index or -1 for the empty state, tokens); returns the states of its passes
        and where each segment's end state is kept."""
        store: list[torch.Tensor] = []
        where: list[StateRef] = [None] * len(segments)
        todo = list(range(len(segments)))
        while todo:
            ready = [i for i in todo if segments[i][0] < 0 or where[segments[i][0]] is not None]
            for batch in pack([len(segments[i][1]) for i in ready], self.batch_size, MAX_BATCH_POSITIONS):
                ids = [ready[j] for j in batch]
                state = self.gather_states(store, [where[segments[i][0]] if segments[i][0] >= 0 else None
                                                   for i in ids])
                tokens, lengths, _ = right_padded([segments[i][1] for i in ids], self.device)
                for start in range(0, tokens.shape[1], self.chunk_size):
                    self.advance_chunk(tokens, lengths, state, start)
                    self.counts.forward_passes += 1
                self.counts.count_positions(tokens.numel(), padding=tokens.numel() - int(lengths.sum()))
                store.append(state)
                for row, i in enumerate(ids):
                    where[i] = (len(store) - 1, row)
            done = set(ready)
            todo = [i for i in todo if i not in done]
        return store, where

    def advance_chunk(self, tokens: torch.Tensor, lengths: torch.Tensor, state: torch.Tensor, start: int) -> None:
        """Positions [start, start + chunk_size) of the rows still running there, their states advanced in
        place, each row stopping at its own length."""
        model = self.model
        end = min(start + self.chunk_size, tokens.shape[1])
        if start == 0 and end == tokens.shape[1]:
            model.hidden(tokens, state, recurrent=False, lengths=lengths)
            return
        active = (lengths > start).nonzero()[:, 0]
        sub = model.select_rows(state, active)
        model.hidden(tokens[active, start:end], sub, recurrent=False,
                     lengths=(lengths[active] - start).clamp(max=end - start))
        model.put_rows(state, active, sub)

    def score_continuations(self, store, refs, inputs, members) -> dict[Request, tuple[float, bool]]:
        """Every continuation from its context's state: rows packed by length, inputs right-padded (the
        model is causal: padding after a row cannot change its outputs); the head and log-softmax run only
        at real positions, where every input predicts a continuation token."""
        model, results = self.model, {}
        for batch in pack([len(x) for x in inputs], self.batch_size, MAX_BATCH_POSITIONS):
            tokens, lengths, mask = right_padded([inputs[i] for i in batch], self.device)
            state = self.gather_states(store, [refs[i] for i in batch])
            # hidden states at the real positions, row-major (row b's positions start at offset[b])
            hidden = torch.empty(int(lengths.sum()), model.d_model, device=self.device, dtype=model.weight_dtype)
            flat = mask.flatten().cumsum(0).view_as(mask) - 1
            for start in range(0, tokens.shape[1], self.chunk_size):
                end = min(start + self.chunk_size, tokens.shape[1])
                x = model.hidden(tokens[:, start:end], state, recurrent=False)
                self.counts.forward_passes += 1
                chunk_mask = mask[:, start:end]
                hidden[flat[:, start:end][chunk_mask]] = x[chunk_mask]
            self.counts.count_positions(tokens.numel(), padding=tokens.numel() - hidden.shape[0])
            # one element per (continuation, target token): the position that predicts it
            offsets = [0]
            for i in batch:
                offsets.append(offsets[-1] + len(inputs[i]))
            keys, el_pos, el_tgt, el_who = [], [], [], []
            for b, i in enumerate(batch):
                for key in members[i]:
                    targets = key[1]
                    el_pos.extend(range(offsets[b], offsets[b] + len(targets)))
                    el_tgt.extend(targets)
                    el_who.extend([len(keys)] * len(targets))
                    keys.append(key)
            el_pos, el_tgt, el_who = (self.index(v) for v in (el_pos, el_tgt, el_who))
            logp_sum = torch.zeros(len(keys), dtype=torch.float64, device=self.device)
            misses = torch.zeros(len(keys), dtype=torch.long, device=self.device)
            for h in range(0, hidden.shape[0], HEAD_ROWS):
                logits = model.logits(hidden[h:h + HEAD_ROWS]).float()
                sel = ((el_pos >= h) & (el_pos < h + HEAD_ROWS)).nonzero()[:, 0]
                pos, tgt, who = el_pos[sel] - h, el_tgt[sel], el_who[sel]
                lp = logits[pos, tgt] - torch.logsumexp(logits, dim=-1)[pos]
                logp_sum.index_add_(0, who, lp.double())
                misses.index_add_(0, who, (logits.argmax(-1)[pos] != tgt).long())
            for key, lp, miss in zip(keys, logp_sum.tolist(), misses.tolist()):
                results[key] = (lp, miss == 0)
        return results

    def from_scratch(self, ctx: tuple, cont: tuple) -> tuple[float, bool]:
        """The reference: one request, context + continuation[:-1] run from the empty state."""
        inputs = ctx + cont[:-1]
        logits, _ = self.model(self.index([inputs]), None, chunk_size=self.chunk_size)
        self.counts.count_positions(len(inputs))
        self.counts.forward_passes += -(-len(inputs) // self.chunk_size)
        logp = F.log_softmax(logits[0, len(ctx) - 1:].float(), dim=-1)
        target = self.index(cont)
        token_lp = logp.gather(-1, target[:, None])[:, 0]
        return float(token_lp.double().sum()), bool((logp.argmax(-1) == target).all())

    def index(self, values) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)
