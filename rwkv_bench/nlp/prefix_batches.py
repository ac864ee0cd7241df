"""Planning the work of many loglikelihood requests for a recurrent model: plain token lists in, plans out.

- `prefix_segments`: contexts cut into the segments of their prefix tree, so a prefix that several contexts
  share runs once and its state is copied to each of them;
- `pack`: rows of different lengths grouped into few right-padded passes, padding kept small;
- `right_padded`: token lists -> one right-padded tensor, the rows' lengths and the mask of real positions.

No model here: shared_prefix.py runs these plans through a RecurrentLM.
"""
from __future__ import annotations

import torch

PAD_BUDGET = 96  # padding positions one pass may carry: about what one more pass costs on a CPU


def common_prefix(a: tuple, b: tuple) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_segments(contexts: list[tuple]) -> tuple[list[tuple[int, tuple]], dict[tuple, int]]:
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


def pack(lengths: list[int], max_rows: int, max_positions: int) -> list[list[int]]:
    """Indices into `lengths`, longest first, cut into batches for right-padded passes: at most `max_rows`
    rows and `max_positions` padded positions per batch, and at most PAD_BUDGET padding positions (on a
    CPU a pass is compute-bound: padding is paid in full)."""
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


def right_padded(seqs: list, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token lists -> (tokens (B, T) right-padded with 0, lengths (B,), mask (B, T) of real positions),
    built with one tensor for all tokens (no per-row tensors)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    longest = int(lengths.max())
    mask = torch.arange(longest)[None, :] < lengths[:, None]
    tokens = torch.zeros(len(seqs), longest, dtype=torch.long)
    tokens[mask] = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
    return tokens.to(device), lengths.to(device), mask.to(device)
