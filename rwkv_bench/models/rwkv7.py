"""RWKV-7 "Goose" (x070; Peng et al., 2025), readable top to bottom.

    tokens -> embedding -> LayerNorm (block 0's ln0)
           -> N x [ x + TimeMix(LN(x)) ; x + ChannelMix(LN(x)) ]
           -> LayerNorm -> head -> logits

Time mixing keeps, per head of N = 64 channels, an N x N matrix state S and for every token does

    S <- S diag(w) + (S (-kk)) (kk a)^T + v k^T          y = S r

w is a data-dependent decay in (exp(-e^-0.5), 1), kk the normalised key (the direction S forgets along), a the
"in-context learning rate". The value of layer 0 is mixed into every later layer's value (v-first residual).

Parameter names follow BlinkDL's x070 checkpoints (`blocks.3.att.w1`, ...); the LoRA widths are read from
the weights, and layer 0 has no value LoRA (v0/v1/v2), as in the published checkpoints.

It implements the recurrent-model interface of recurrent.py. Two ways to run the same weights:
- sequence mode: every matrix product over a whole chunk of tokens, the WKV-7 kernel walking the chunk;
- recurrent mode: one token at a time, as in generation.

The state is one float32 tensor (n_layer, B, C x (N + 2)); per layer and sequence it holds
  [0, C)        the previous token's input to time mixing (token shift),
  [C, 2C)       the previous token's input to channel mixing,
  [2C, C(N+2))  the WKV state, H matrices of N x N,
so a sequence's state takes C x (N + 2) x n_layer x 4 bytes whatever its length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.wkv7 import wkv7
from .recurrent import RecurrentLM, last_positions, token_shift

DECAY_SCALE = math.exp(-0.5)      # w = exp(-e^-0.5 * sigmoid(.)): every decay lies in (0.545, 1)
HEAD_SIZE = 64


@dataclass
class RWKV7Config:
    vocab_size: int = 50304       # GPT-NeoX-20B's 50277 tokens padded to a multiple of 64 (the x070 Pile models)
    n_layer: int = 12             # blocks
    n_embd: int = 768             # C = heads x head size
    head_size: int = HEAD_SIZE    # N: channels per head, each head an N x N state
    ffn_dim: int = 0              # 0: 4 x n_embd, as in every published x070 model
    decay_lora: int = 0           # LoRA widths; 0: RWKV-LM's suggestion for this width
    a_lora: int = 0
    v_lora: int = 0
    gate_lora: int = 0
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.n_embd % self.head_size:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of the head size {self.head_size}")
        C = self.n_embd
        self.ffn_dim = self.ffn_dim or 4 * C
        suggest = lambda factor: max(32, int(round(factor * C ** 0.5 / 32)) * 32)  # noqa: E731 (RWKV-LM's rule)
        self.decay_lora = self.decay_lora or suggest(2.5)
        self.a_lora = self.a_lora or suggest(2.5)
        self.v_lora = self.v_lora or suggest(1.7)
        self.gate_lora = self.gate_lora or suggest(5.0)

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size


def padding_mask(lengths: torch.Tensor | None, T: int, device) -> torch.Tensor | None:
    """(B, T, 1) True at the padded positions of right-padded rows, None when no row is padded."""
    if lengths is None or bool((lengths == T).all()):
        return None
    return (torch.arange(T, device=device) >= lengths.to(device).unsqueeze(1)).unsqueeze(-1)


class LoRA(nn.Module):
    """x @ down -> (activation) -> @ up: the low-rank projections of w, a, v and g (BlinkDL names them x1, x2)."""

    def __init__(self, C: int, width: int):
        super().__init__()
        self.down = nn.Parameter(torch.zeros(C, width))
        self.up = nn.Parameter(torch.zeros(width, C))

    def forward(self, x: torch.Tensor, activation=None) -> torch.Tensor:
        h = x @ self.down
        return (h if activation is None else activation(h)) @ self.up


class TimeMix(nn.Module):
    """RWKV-7's attention replacement: a per-head matrix memory written by a generalised delta rule."""

    def __init__(self, config: RWKV7Config, layer_id: int):
        super().__init__()
        C = config.n_embd
        self.layer_id = layer_id
        self.n_head, self.head_size = config.n_head, config.head_size
        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (nn.Parameter(torch.zeros(C)) for _ in range(6))
        self.w0 = nn.Parameter(torch.zeros(C))           # decay bias (before sigmoid)
        self.w_lora = LoRA(C, config.decay_lora)
        self.a0 = nn.Parameter(torch.zeros(C))           # in-context learning rate bias
        self.a_lora = LoRA(C, config.a_lora)
        if layer_id > 0:                                 # layer 0's value is v-first itself
            self.v0 = nn.Parameter(torch.zeros(C))
            self.v_lora = LoRA(C, config.v_lora)
        self.g_lora = LoRA(C, config.gate_lora)          # output gate
        self.k_k = nn.Parameter(torch.zeros(C))          # key -> removal direction kk
        self.k_a = nn.Parameter(torch.zeros(C))          # how much a scales the written key
        self.r_k = nn.Parameter(torch.zeros(config.n_head, config.head_size))  # per-head bonus r.k v
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(config.n_head, C, eps=64e-5)

    def forward(self, x, shifted, v_first, wkv_state, pad=None):
        """x, shifted: (B, T, C); wkv_state (B, H, N, N) updated in place. Returns (output, v_first)."""
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        mixes = torch.stack([self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g]).view(6, 1, 1, C)
        xr, xw, xk, xv, xa, xg = torch.addcmul(x, shifted - x, mixes).unbind(0)   # six token-shift mixes
        r = self.receptance(xr)
        k = self.key(xk)
        v = self.value(xv)
        if self.layer_id == 0:
            v_first = v
        else:
            v = torch.lerp(v, v_first, torch.sigmoid(self.v_lora(xv).add_(self.v0)))
        a = torch.sigmoid(self.a_lora(xa).add_(self.a0))
        g = self.g_lora(xg, torch.sigmoid)
        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1).view(B, T, C)
        k = torch.addcmul(k, k * self.k_a, a - 1)                                   # k (1 + (a - 1) k_a)
        decay = torch.sigmoid(self.w_lora(xw, torch.tanh).add_(self.w0).float()).mul_(-DECAY_SCALE).exp_()
        remove, write = -kk, kk * a
        if pad is not None:   # padded positions leave the state exactly as it is: w = 1, k = 0, b = 0
            decay, k_in, write = decay.masked_fill(pad, 1.0), k.masked_fill(pad, 0.0), write.masked_fill(pad, 0.0)
        else:
            k_in = k
        y = wkv7(r, decay, k_in, v, remove, write, wkv_state)
        y = self.ln_x(y.view(B * T, C)).view(B, T, H, N)
        bonus = torch.mul(r, k).mul_(self.r_k.view(C)).view(B, T, H, N).sum(-1, keepdim=True)   # r.k per head
        y = torch.addcmul(y, bonus, v.view(B, T, H, N)).view(B, T, C)
        return self.output(y.mul_(g)), v_first


class ChannelMix(nn.Module):
    """RWKV-7's feed-forward: token shift, squared ReLU, no receptance gate (unlike RWKV-4)."""

    def __init__(self, C: int, ffn_dim: int):
        super().__init__()
        self.x_k = nn.Parameter(torch.zeros(C))
        self.key = nn.Linear(C, ffn_dim, bias=False)
        self.value = nn.Linear(ffn_dim, C, bias=False)

    def forward(self, x, shifted):
        k = self.key(torch.addcmul(x, shifted - x, self.x_k)).relu_().square_()
        return self.value(k)


class Block(nn.Module):
    def __init__(self, config: RWKV7Config, layer_id: int):
        super().__init__()
        C = config.n_embd
        if layer_id == 0:  # the embeddings are normalised once, inside the first block
            self.ln0 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.ln1 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.ln2 = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.att = TimeMix(config, layer_id)
        self.ffn = ChannelMix(C, config.ffn_dim)

    def forward(self, x, v_first, state, lengths=None):
        """x (B, T, C); `state` (B, C(N+2)) this layer's rows, updated in place. Returns (x, v_first)."""
        C = x.shape[-1]
        att_shift, ffn_shift = state[:, :C], state[:, C:2 * C]
        wkv_state = state[:, 2 * C:].view(x.shape[0], self.att.n_head, self.att.head_size, self.att.head_size)
        if hasattr(self, "ln0"):
            x = self.ln0(x)
        h = self.ln1(x)
        out, v_first = self.att(h, token_shift(h, att_shift), v_first, wkv_state,
                                padding_mask(lengths, x.shape[1], x.device))
        att_shift.copy_(last_positions(h, lengths))
        x = x + out
        h = self.ln2(x)
        x = x + self.ffn(h, token_shift(h, ffn_shift))
        ffn_shift.copy_(last_positions(h, lengths))
        return x, v_first


class RWKV7(RecurrentLM):
    version = "rwkv7"
    state_batch_dim = 1

    def __init__(self, config: RWKV7Config):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def init_state(self, batch: int = 1) -> torch.Tensor:
        c = self.config
        return torch.zeros(c.n_layer, batch, c.n_embd * (c.head_size + 2), dtype=torch.float32,
                           device=self.emb.weight.device)

    def hidden(self, tokens: torch.Tensor, state: torch.Tensor, recurrent: bool,
               lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Run all blocks over `tokens` (B, T), updating `state` in place; returns the last block's output.
        One code path for both modes: recurrent mode is the sequence mode over one token (the WKV-7 kernel
        then does one step), so the two cannot drift apart."""
        if recurrent and tokens.shape[1] != 1:
            raise ValueError("recurrent mode takes one token per call")
        x = self.emb(tokens)
        v_first = None
        for i, block in enumerate(self.blocks):
            x, v_first = block(x, v_first, state[i], lengths)
        return x


# ---- random initialisation, after BlinkDL's RWKV-LM (RWKV-v7/train_temp/src/model.py) ----

@torch.no_grad()
def init_x070_(model: RWKV7, generator: torch.Generator | None = None) -> RWKV7:
    """RWKV-LM's x070 initialisation: token-shift mixes and decay curves that vary with depth and channel,
    zero output projections and LoRA down-projections (so a fresh model starts from its biases), orthogonal
    matrices elsewhere, tiny uniform embeddings."""
    c = model.config
    L, C, N = c.n_layer, c.n_embd, c.head_size
    n = torch.arange(C, dtype=torch.float64)
    ddd = n / C
    linear = n / (C - 1) - 0.5
    zigzag = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
    zigzag = zigzag * zigzag.abs()
    model.emb.weight.uniform_(-1e-4, 1e-4, generator=generator)
    for layer_id, block in enumerate(model.blocks):
        att, ffn = block.att, block.ffn
        depth = layer_id / (L - 1) if L > 1 else 0.0     # 0 at the bottom, 1 at the top
        shallow = 1.0 - layer_id / L                      # 1 at the bottom, -> 0 at the top
        for mix, power in ((att.x_r, 0.2), (att.x_w, 0.9), (att.x_k, 0.7), (att.x_v, 0.7), (att.x_a, 0.9),
                           (att.x_g, 0.2)):
            mix.copy_(1.0 - ddd ** (power * shallow))
        att.w0.copy_(-6 + 6 * (n / (C - 1)) ** (1 + depth ** 0.3) + 0.5 + zigzag * 2.5)
        att.a0.copy_(-0.19 + zigzag * 0.3 + linear * 0.4)
        att.k_k.copy_(0.71 - linear * 0.1)
        att.k_a.fill_(1.02)
        att.r_k.fill_(-0.04)
        loras = [att.w_lora, att.a_lora, att.g_lora]
        if layer_id > 0:
            att.v0.copy_(0.73 - linear * 0.4)
            loras.append(att.v_lora)
        for lora in loras:
            lora.down.zero_()
            orthogonal_(lora.up, 0.1, generator)
        att.ln_x.weight.fill_(((1 + layer_id) / L) ** 0.7)
        att.ln_x.bias.zero_()
        orthogonal_(att.receptance.weight, 1.0, generator)
        orthogonal_(att.key.weight, 0.1, generator)
        orthogonal_(att.value.weight, 1.0, generator)
        att.output.weight.zero_()
        ffn.x_k.copy_(1.0 - ddd ** (shallow ** 4))
        orthogonal_(ffn.key.weight, 1.0, generator)
        ffn.value.weight.zero_()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
    V = c.vocab_size
    orthogonal_(model.head.weight, 0.5 * math.sqrt(V / C) if V > C else 0.5, generator)
    return model


def orthogonal_(weight: torch.Tensor, gain: float, generator=None) -> None:
    """RWKV-LM's generate_init_weight: orthogonal with the given gain (its LoRA up-projections are wide, so
    their ortho_init's sqrt(rows / cols) factor is 1 too)."""
    nn.init.orthogonal_(weight, gain=gain, generator=generator)


@torch.no_grad()
def init_random_(model: RWKV7, seed: int = 0, scale: float = 0.5) -> RWKV7:
    """Dense random weights with every path non-trivial (no zero blocks), for tests that compare
    implementations: decays spread over their range, mixes in (0, 1), norms near 1."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("x_"):
            p.copy_(torch.rand(p.shape, generator=g))
        elif leaf == "w0":
            p.copy_(torch.rand(p.shape, generator=g) * 8 - 6)
        elif leaf in ("down", "up"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 / math.sqrt(p.shape[0]))
        elif leaf == "weight" and p.dim() == 2:
            p.copy_(torch.randn(p.shape, generator=g) * scale / math.sqrt(p.shape[1]))
        elif leaf == "weight":  # LayerNorm / GroupNorm gains
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        elif leaf == "k_a":
            p.copy_(torch.rand(p.shape, generator=g) * 1.5)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model
