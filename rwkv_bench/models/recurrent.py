"""What every scenario asks of a recurrent language model, so none of them asks which RWKV it holds.

RWKV-4 (rwkv4.py) and RWKV-7 (rwkv7.py) implement this; adding RWKV-6 would be one more model file and its
kernel. A model's recurrent state is ONE float32 tensor (whatever the weights' dtype: a long sequence
accumulates in it), with the batch along `state_batch_dim`, so scenarios can select, copy and concatenate rows
of states (nlp's shared prefixes, serving many sequences) without knowing what the rows hold.

    init_state(batch)                       the empty state of `batch` sequences
    forward(tokens, state, mode=, chunk_size=, last_only=) -> (logits, new state)   the state passed is not modified
    advance(tokens, state, chunk_size=)     -> new state, no logits computed (a prefill whose predictions are unused)
    hidden(tokens, state, recurrent, lengths=)  -> last block's output; updates `state` in place; `lengths`:
                                            right-padded rows of different lengths, each left as after its own tokens
    logits(x)                               final norm + head, float32
Beside it, the two sequence helpers both RWKVs use: token_shift and last_positions (right-padded rows).
    select_rows / put_rows / cat_rows       rows of a state along the batch dimension
    state_bytes(batch)                      bytes of the state of `batch` sequences
    load_checkpoint(tensors, dtype)         a checkpoint's weights, checked (the loaders name them as ours first)
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError


def token_shift(x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """x shifted one step back in time: position t sees x[t-1]; position 0 sees the carried `last`."""
    return torch.cat([last.to(x.dtype).unsqueeze(1), x[:, :-1]], dim=1)


def last_positions(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Each row's last position of x (B, T, C): T - 1, or lengths - 1 for right-padded rows."""
    if lengths is None:
        return x[:, -1]
    return x[torch.arange(x.shape[0], device=x.device), lengths - 1]


class RecurrentLM(nn.Module):
    version: str                 # "rwkv4", "rwkv7": names the implementation in every table
    state_batch_dim: int         # where the batch lies in this model's state tensor

    def load_checkpoint(self, tensors: dict, dtype: torch.dtype, file_name=lambda name: name) -> "RecurrentLM":
        """This model holding `tensors` (named as ours), in `dtype`, ready to run. Every tensor it has must be
        there with as many elements (BlinkDL files store vectors as (1, 1, C)); a missing or misshapen one is
        one line naming it as the checkpoint does (`file_name`)."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(tensors), key=lambda name: (len(name), name))
        if missing:
            raise UserError(f"{self.version} checkpoint lacks {len(missing)} tensor(s), e.g. "
                            f"{file_name(missing[0])!r}")
        fitted = {}
        for name, ref in expected.items():
            t = tensors[name]
            if t.numel() != ref.numel():
                raise UserError(f"tensor {file_name(name)!r} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}")
            fitted[name] = t.reshape(ref.shape).float()
        self.load_state_dict(fitted)
        return self.to(dtype).eval()

    @property
    def d_model(self) -> int:
        return self.config.n_embd

    @property
    def weight_dtype(self) -> torch.dtype:
        return self.emb.weight.dtype

    def init_state(self, batch: int = 1) -> torch.Tensor:
        raise NotImplementedError

    def hidden(self, tokens: torch.Tensor, state: torch.Tensor, recurrent: bool,
               lengths: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final layer norm and vocabulary head (both RWKVs end so), in float32."""
        return self.head(self.ln_out(x)).float()

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None, *, mode: str = "parallel",
                chunk_size: int = 1024, last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) -> logits (B, T, V), or (B, 1, V) with last_only, and the state after them.
        parallel: chunks of `chunk_size` tokens per layer, the state carried between chunks, so peak memory
        is O(chunk x d) whatever the length; recurrent: one token at a time, as in generation."""
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise ValueError(f"tokens must have shape (B, T) with T >= 1, got {tuple(tokens.shape)}")
        state = self.init_state(tokens.shape[0]) if state is None else state.clone()
        if mode == "recurrent":
            spans = [(t, t + 1) for t in range(tokens.shape[1])]
        elif mode == "parallel":
            spans = [(s, min(s + chunk_size, tokens.shape[1])) for s in range(0, tokens.shape[1], chunk_size)]
        else:
            raise ValueError(f"mode must be 'parallel' or 'recurrent', not {mode!r}")
        logits = []
        for start, end in spans:
            x = self.hidden(tokens[:, start:end], state, recurrent=(mode == "recurrent"))
            if last_only and end < tokens.shape[1]:
                continue  # only the very last position's logits are wanted: skip the head here
            logits.append(self.logits(x[:, -1:] if last_only else x))
        return torch.cat(logits, dim=1), state

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor, state: torch.Tensor | None = None, *,
                chunk_size: int = 1024) -> torch.Tensor:
        """The state after `tokens` (B, T), computing no logits at all: a prefill whose predictions are not
        needed skips the head, which on a CPU costs as much as the rest of a small model."""
        state = self.init_state(tokens.shape[0]) if state is None else state.clone()
        for start in range(0, tokens.shape[1], chunk_size):
            self.hidden(tokens[:, start:start + chunk_size], state, recurrent=False)
        return state

    def select_rows(self, state: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """A new state holding rows `rows` (a 1-D index tensor) of `state`."""
        return state.index_select(self.state_batch_dim, rows)

    def put_rows(self, state: torch.Tensor, rows: torch.Tensor, sub: torch.Tensor) -> None:
        """Write `sub`'s rows into rows `rows` of `state`, in place."""
        state.index_copy_(self.state_batch_dim, rows, sub)

    def cat_rows(self, states: list[torch.Tensor]) -> torch.Tensor:
        return states[0] if len(states) == 1 else torch.cat(states, dim=self.state_batch_dim)

    def state_bytes(self, batch: int = 1) -> int:
        """Bytes of the recurrent state of `batch` sequences (a constant: it does not grow with context)."""
        state = self.init_state(1)
        return batch * state.numel() * state.element_size()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
