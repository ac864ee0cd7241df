"""Pure PyTorch WKV: the readable oracle the kernels are tested against.

RWKV-4's WKV for one channel, with w < 0 the per-step log-decay (w = -exp(time_decay)) and u the bonus
for the current token ("time_first"):

    y_t = (a_t + e^(u+k_t) v_t) / (b_t + e^(u+k_t))
    a_{t+1} = e^w a_t + e^(k_t) v_t,      b_{t+1} = e^w b_t + e^(k_t)

a and b overflow for large k, so the state is kept as (aa, bb, pp) with a = aa * e^pp, b = bb * e^pp and
pp the running maximum exponent (the paper's appendix). An empty state is aa = bb = 0, pp = -1e38
(a large finite number rather than -inf, so that pp - pp never gives NaN). Any state with bb = 0 holds
no past (b = 0, hence a = 0) and is read as the empty one whatever its pp (`clear_empty`), here and in the
compiled kernels (kernels/wkv_step.h, initial_pp): a finite pp far above the first token's exponent would
otherwise underflow that token's weight to 0 and give y = 0/0, where exact arithmetic gives y = v.
"""
from __future__ import annotations

import torch

EMPTY_PP = -1e38


def empty_state(batch: int, channels: int, device=None) -> torch.Tensor:
    """State of shape (B, 3, C): rows are aa, bb, pp."""
    state = torch.zeros(batch, 3, channels, dtype=torch.float32, device=device)
    state[:, 2] = EMPTY_PP
    return state


def clear_empty(state: torch.Tensor) -> torch.Tensor:
    """The state with pp = EMPTY_PP wherever bb = 0 (such a state is empty; its pp gets no gradient)."""
    aa, bb, pp = state.unbind(1)
    return torch.stack([aa, bb, torch.where(bb == 0, torch.full_like(pp, EMPTY_PP), pp)], dim=1)


def wkv_step(w, u, kt, vt, aa, bb, pp):
    """One time step for all channels: returns y_t and the state after the token."""
    # output: mix the state with the current token, which gets the bonus u
    ww = u + kt
    p = torch.maximum(pp, ww)
    e1, e2 = torch.exp(pp - p), torch.exp(ww - p)
    y = (e1 * aa + e2 * vt) / (e1 * bb + e2)
    # state update: decay the past by e^w and add the current token
    ww = w + pp
    p = torch.maximum(ww, kt)
    e1, e2 = torch.exp(ww - p), torch.exp(kt - p)
    return y, e1 * aa + e2 * vt, e1 * bb + e2, p


def wkv_reference(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV over a sequence, one step at a time. w, u: (C,); k, v: (B, T, C); state: (B, 3, C).

    Returns y (B, T, C) in k's dtype and the final state (B, 3, C). Computes in float32, or in float64
    when given float64 (for gradcheck). Differentiable by autograd in every input, the state included.
    """
    compute = torch.float64 if k.dtype == torch.float64 else torch.float32
    B, T, C = k.shape
    if state is None:
        state = empty_state(B, C, k.device).to(compute)
    w, u, k, v, state = (x.to(compute) for x in (w, u, k, v, state))
    aa, bb, pp = clear_empty(state).unbind(1)
    ys = []
    # unbind, not k[:, t]: the backward of T slices would write T full-size gradients (O(T^2) time)
    for kt, vt in zip(k.unbind(1), v.unbind(1)):
        y, aa, bb, pp = wkv_step(w, u, kt, vt, aa, bb, pp)
        ys.append(y)
    y = torch.stack(ys, dim=1) if ys else k.new_zeros(B, 0, C)
    return y.to(k.dtype), torch.stack([aa, bb, pp], dim=1)
