"""RWKV-4 (Peng et al., 2023), readable top to bottom.

    tokens -> embedding -> LayerNorm (block 0's ln0)
           -> N x [ x + TimeMix(LN(x)) ; x + ChannelMix(LN(x)) ]
           -> LayerNorm -> head -> logits

Parameter names follow BlinkDL's checkpoints (`emb.weight`, `blocks.0.att.time_decay`, ...), so a `.pth`
loads as it is and a Hugging Face `RwkvForCausalLM` is a renaming away (see loaders.py).

It implements the recurrent-model interface of recurrent.py (which holds `forward` and `advance`).
One set of weights, two ways to run it, both `forward(tokens, state) -> (logits, state)`:
- parallel: a whole chunk of tokens per layer with the WKV operator; a long sequence is processed
  chunk by chunk, carrying the state, so peak memory is O(chunk x d) whatever the length.
- recurrent: one token at a time with matrix-vector products and a single WKV step, as in generation.

The state is one float32 tensor of shape (n_layer, 5, B, C); per layer its rows are
  ATT_SHIFT  the previous token's input to time mixing (token shift),
  AA, BB, PP the WKV numerator, denominator and running maximum exponent,
  FFN_SHIFT  the previous token's input to channel mixing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..ops import rwkv4_fused
from ..ops.wkv import wkv
from ..ops.wkv_reference import EMPTY_PP, wkv_step
from .recurrent import RecurrentLM, last_positions, token_shift

ATT_SHIFT, AA, BB, PP, FFN_SHIFT = range(5)


@dataclass
class RWKVConfig:
    vocab_size: int = 50277     # the GPT-NeoX-20B tokenizer's, as in the Pile models
    n_layer: int = 12           # blocks
    n_embd: int = 768           # C, the width of each token's vector
    ffn_dim: int = 0            # 0 means 4 * n_embd, as in the paper
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.ffn_dim == 0:
            self.ffn_dim = 4 * self.n_embd


def ragged_wkv(w, u, k, v, state, lengths: torch.Tensor | None):
    """`wkv` over rows (B, T) that may be right-padded to T: the WKV (elementwise over channels, sequential
    over time, cheap next to the matrix products) runs per group of rows of equal length on exactly their
    tokens, so each row's output and state are the ones the row alone would give; padded positions of y are
    zero. Padding reaches nothing else: the matrix products work position by position."""
    groups = None if lengths is None else torch.unique(lengths).tolist()
    if groups is None or len(groups) == 1:
        return wkv(w, u, k, v, state)
    y, new_state = torch.zeros_like(k), torch.empty_like(state)
    for n in groups:
        idx = (lengths == n).nonzero()[:, 0]
        y[idx, :n], new_state[idx] = wkv(w, u, k[idx, :n], v[idx, :n], state[idx])
    return y, new_state


def mix(x: torch.Tensor, last: torch.Tensor, mus: torch.Tensor) -> torch.Tensor:
    """Token shift's interpolations mu * x + (1 - mu) * shifted for every row of mus (n, C), stacked along a
    new first dimension (n, *x.shape): shifted is x one step back in time (`last` before the first position)
    for x (B, T, C), and `last` itself for one token x (B, C). One pass, fused where the kernel applies."""
    if x.dim() == 3:
        fused = rwkv4_fused.shift_mix(x, last, mus)
        if fused is not None:
            return fused
        shifted = token_shift(x, last)
    else:
        shifted = last.to(x.dtype)
    mus = mus.view(mus.shape[0], *[1] * (x.dim() - 1), mus.shape[1]).to(x.dtype)
    return torch.addcmul(shifted, x - shifted, mus)


def relu_square_(k: torch.Tensor) -> torch.Tensor:
    """relu(k)^2 in place (a fresh (T, 4C) buffer would cost page faults)."""
    fused = rwkv4_fused.relu_square_(k)
    return fused if fused is not None else torch.relu_(k).square_()


def gate_(r: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sigmoid(r) * v, in place in r: the receptance gate."""
    fused = rwkv4_fused.sigmoid_mul_(r, v)
    return fused if fused is not None else torch.sigmoid_(r).mul_(v)


class TimeMix(nn.Module):
    """RWKV's attention replacement: receptance gates a decayed weighted average of past values."""

    def __init__(self, C: int):
        super().__init__()
        self.time_decay = nn.Parameter(torch.zeros(C))   # w = -exp(time_decay): per-channel decay
        self.time_first = nn.Parameter(torch.zeros(C))   # u: bonus for the current token
        self.time_mix_k = nn.Parameter(torch.zeros(C))   # mu_k: the key's share of x against the previous token
        self.time_mix_v = nn.Parameter(torch.zeros(C))   # mu_v: the value's
        self.time_mix_r = nn.Parameter(torch.zeros(C))   # mu_r: the receptance's
        self.key = nn.Linear(C, C, bias=False)           # k: a token's log-weight in the average
        self.value = nn.Linear(C, C, bias=False)         # v: what is averaged
        self.receptance = nn.Linear(C, C, bias=False)    # r: sigmoid(r) gates the average
        self.output = nn.Linear(C, C, bias=False)

    def projections(self, x, last):
        xk, xv, xr = mix(x, last, torch.stack([self.time_mix_k, self.time_mix_v, self.time_mix_r]))
        return self.receptance(xr), self.key(xk), self.value(xv)

    def forward(self, x: torch.Tensor, state: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Parallel over x's T positions (`lengths`: rows right-padded to T). Updates this layer's `state`
        rows in place."""
        r, k, v = self.projections(x, state[ATT_SHIFT])
        w = -torch.exp(self.time_decay.float())
        y, wkv_state = ragged_wkv(w, self.time_first.float(), k, v, state[AA:PP + 1].transpose(0, 1), lengths)
        state[ATT_SHIFT] = last_positions(x, lengths).float()
        state[AA:PP + 1] = wkv_state.transpose(0, 1)
        return self.output(gate_(r, y))

    def step(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One token, x of shape (B, C)."""
        r, k, v = self.projections(x, state[ATT_SHIFT])
        w = -torch.exp(self.time_decay.float())
        pp = torch.where(state[BB] == 0, EMPTY_PP, state[PP])  # bb = 0 holds no past: empty, as the kernels read it
        y, state[AA], state[BB], state[PP] = wkv_step(w, self.time_first.float(), k.float(), v.float(),
                                                      state[AA], state[BB], pp)
        state[ATT_SHIFT] = x.float()
        return self.output(gate_(r, y.to(x.dtype)))


class ChannelMix(nn.Module):
    """RWKV's feed-forward: squared ReLU, gated by receptance."""

    def __init__(self, C: int, ffn_dim: int):
        super().__init__()
        self.time_mix_k = nn.Parameter(torch.zeros(C))   # token-shift mixes, as in TimeMix
        self.time_mix_r = nn.Parameter(torch.zeros(C))
        self.key = nn.Linear(C, ffn_dim, bias=False)     # up to ffn_dim, then relu^2
        self.receptance = nn.Linear(C, C, bias=False)    # sigmoid(r) gates the output
        self.value = nn.Linear(ffn_dim, C, bias=False)   # back down to C

    def mix_and_project(self, x, last):
        xk, xr = mix(x, last, torch.stack([self.time_mix_k, self.time_mix_r]))
        k = relu_square_(self.key(xk))
        return gate_(self.receptance(xr), self.value(k))

    def forward(self, x: torch.Tensor, state: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        out = self.mix_and_project(x, state[FFN_SHIFT])
        state[FFN_SHIFT] = last_positions(x, lengths).float()
        return out

    def step(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        out = self.mix_and_project(x, state[FFN_SHIFT])
        state[FFN_SHIFT] = x.float()
        return out


class Block(nn.Module):
    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C = config.n_embd
        if layer_id == 0:  # RWKV-4 normalises the embeddings once, inside the first block
            self.ln0 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.ln1 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.ln2 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.att = TimeMix(C)
        self.ffn = ChannelMix(C, config.ffn_dim)

    def forward(self, x, state, recurrent: bool, lengths: torch.Tensor | None = None):
        if hasattr(self, "ln0"):
            x = self.ln0(x)
        if recurrent:
            x = x + self.att.step(self.ln1(x), state)
            return x + self.ffn.step(self.ln2(x), state)
        x = x + self.att(self.ln1(x), state, lengths)
        return x + self.ffn(self.ln2(x), state, lengths)


class RWKV4(RecurrentLM):
    version = "rwkv4"
    state_batch_dim = 2

    def __init__(self, config: RWKVConfig):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def init_state(self, batch: int = 1) -> torch.Tensor:
        c = self.config
        state = torch.zeros(c.n_layer, 5, batch, c.n_embd, dtype=torch.float32, device=self.emb.weight.device)
        state[:, PP] = EMPTY_PP
        return state

    def hidden(self, tokens: torch.Tensor, state: torch.Tensor, recurrent: bool,
               lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Run all blocks over `tokens` (updating `state` in place); returns the last block's output.
        `lengths`: rows of different lengths right-padded into one parallel pass, each row's state left as
        after its own tokens (nlp's shared-prefix scoring batches segments this way)."""
        x = self.emb(tokens)
        if recurrent:
            x = x[:, 0]
            fused = rwkv4_fused.body_step(self, self.blocks[0].ln0(x), state)  # None where it does not apply
            if fused is not None:
                return fused.to(x.dtype).unsqueeze(1)
            for i, block in enumerate(self.blocks):
                x = block(x, state[i], recurrent=True)
            return x.unsqueeze(1)
        for i, block in enumerate(self.blocks):
            x = block(x, state[i], recurrent=False, lengths=lengths)
        return x


# ---- random initialisation, after the paper's Appendix E (and BlinkDL's RWKV-LM) ----

ZERO_INIT = ("att.key", "att.receptance", "att.output", "ffn.value", "ffn.receptance")


@torch.no_grad()
def init_paper_(model: RWKV4, generator: torch.Generator | None = None) -> RWKV4:
    """Initialise as the paper describes: tiny uniform embeddings, time-mixing and decay curves that vary
    smoothly with depth and channel, zero for the projections named in ZERO_INIT, orthogonal elsewhere."""
    c = model.config
    L, C = c.n_layer, c.n_embd
    ramp = torch.arange(C, dtype=torch.float64) / C                 # channel position in [0, 1)
    model.emb.weight.uniform_(-1e-4, 1e-4, generator=generator)
    for layer_id, block in enumerate(model.blocks):
        depth = layer_id / (L - 1) if L > 1 else 0.0                 # 0 at the bottom, 1 at the top
        shallow = 1.0 - layer_id / L                                 # 1 at the bottom, -> 0 at the top
        att, ffn = block.att, block.ffn
        att.time_mix_k.copy_(ramp ** shallow)
        att.time_mix_v.copy_(ramp ** shallow + 0.3 * depth)
        att.time_mix_r.copy_(ramp ** (0.5 * shallow))
        ffn.time_mix_k.copy_(ramp ** shallow)
        ffn.time_mix_r.copy_(ramp ** shallow)
        h = torch.arange(C, dtype=torch.float64) / max(C - 1, 1)
        att.time_decay.copy_(-5 + 8 * h ** (0.7 + 1.3 * depth))
        zigzag = ((torch.arange(C) + 1) % 3 - 1).double() * 0.5
        att.time_first.copy_(math.log(0.3) + zigzag)
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, nn.Linear):
            if any(name.endswith(z) for z in ZERO_INIT):
                module.weight.zero_()
            else:
                rows, cols = module.weight.shape
                gain = math.sqrt(rows / cols) if rows > cols else 1.0
                if name == "head":
                    gain = 0.5 * math.sqrt(rows / cols)
                nn.init.orthogonal_(module.weight, gain=gain, generator=generator)
    return model


@torch.no_grad()
def init_random_(model: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Dense random weights (no zero blocks), for tests that must exercise every path with non-trivial values;
    any module with RWKV-4 parameter names (ours, or transformers' RwkvForCausalLM)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("time_decay"):
            p.copy_(torch.rand(p.shape, generator=g) * 4 - 3)
        elif "time_mix" in name:
            p.copy_(torch.rand(p.shape, generator=g))
        elif name.endswith(".weight") and p.dim() == 2:
            p.copy_(torch.randn(p.shape, generator=g) * scale / math.sqrt(p.shape[1]))
        elif "ln" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model
