"""Where our RWKV's time goes: the forward over T tokens and one decode step, broken into GEMM, WKV, layer
norms, token shift and mixing, head and log-softmax, copies and framework overhead, each as a share of the
total, beside the two hardware limits measured in the same run:

    forward roofline = the model's own matrix products for the same chunks (its weights, its shapes) timed
                       alone: 2 x (body matrix-product parameters) x T / that GEMM rate
    decode bound     = bytes a step must read (every weight once; one embedding row) / (copy bandwidth)

The copy bandwidth is STREAM's "copy": a 512 MiB float32 tensor copied, read + write bytes over the time.

The machine may be shared, so the limits and the model are measured interleaved at a fine grain: each
forward chunk right after the same chunk's GEMMs alone, each few decode steps right after a bandwidth copy.
A round is one forward (and a few decode steps); its ratio is the model's total over the limit's total in
that round, and the report gives the median over rounds with every round's value and the load average.
Each round times the forward and the decode step twice: with the fused kernels (ops/rwkv4_fused.py) and as
PyTorch ops only.

Shares come from torch.profiler (self time of each aten op, grouped by what it does; ops inside the WKV
calls and inside the head are attributed to them through record_function scopes added here, so the model's
code is not touched); what the profiler does not see (Python, dispatch) is "framework overhead".

Usage: python benchmarks/profile_rwkv.py [--size 169m] [--tokens 4096] [--rounds 5] [--threads N]
       [--default-allocator]
Prints Markdown and writes benchmarks/results/profile_rwkv.json with the environment.
"""
from __future__ import annotations

import statistics
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from rwkv_bench.models import rwkv4 as rwkv4_module
from rwkv_bench.models.presets import SIZES, VOCAB
from rwkv_bench.models.rwkv4 import RWKV4
from rwkv_bench.ops import rwkv4_fused
from rwkv_bench.ops.wkv import implementation_name
from rwkv_bench.recording import environment, load_average

from _timing import apply_process_options, random_rwkv4, rwkv4_body_gemms, rwkv4_body_params, rwkv4_parser, seconds, write_result

CATEGORIES = ("GEMM (body)", "WKV", "layer norms", "token shift and mixing", "fused step's loops (WKV, mixing)",
              "head and log-softmax", "copies and indexing", "framework overhead")
NORMS = {"aten::layer_norm", "aten::native_layer_norm"}
GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::mv", "aten::addmv"}
MIXING = {"aten::cat", "aten::stack", "aten::sub", "aten::addcmul", "aten::mul", "aten::sigmoid",
          "aten::relu", "aten::clamp_min", "aten::square", "aten::pow", "aten::exp", "aten::add", "aten::neg",
          "aten::rsub"}
COPY_MIB = 512


# ------------------------------------------------------------------------------------------------ limits
class Copy:
    """STREAM copy of COPY_MIB MiB; `rate` is bytes moved (read + write) per second of the copies so far."""

    def __init__(self):
        self.a = torch.ones(COPY_MIB * 2**20 // 4)
        self.b = torch.empty_like(self.a)
        self.b.copy_(self.a)

    def time(self) -> float:
        return seconds(lambda: self.b.copy_(self.a))

    @property
    def bytes(self) -> int:
        return 2 * self.a.numel() * 4


# ----------------------------------------------------------------------------------------------- timing
def forward_round(model: RWKV4, tokens: torch.Tensor, chunk: int, gemms) -> tuple[float, float]:
    """(model seconds, GEMM-alone seconds) of one forward, chunk by chunk as RecurrentLM.forward runs it
    (hidden per chunk, the head on the last position only), each chunk timed right after its GEMMs."""
    state = model.init_state(tokens.shape[0])
    t_model = t_gemm = 0.0
    for start in range(0, tokens.shape[1], chunk):
        piece = tokens[:, start:start + chunk]
        t_gemm += seconds(gemms[piece.shape[1]])
        t_model += seconds(lambda: model.hidden(piece, state, recurrent=False))
    last = model.hidden(tokens[:, -1:], state.clone(), recurrent=False)  # stand-in input of the right shape
    t_model += seconds(lambda: model.logits(last))
    return t_model, t_gemm


def decode_round(model: RWKV4, state: torch.Tensor, token: torch.Tensor, steps: int, copy: Copy,
                 per_copy: int = 4) -> tuple[float, float]:
    """(seconds per step, seconds per copy byte), from `steps` steps interleaved with copies."""
    s = state.clone()
    t_steps = t_copies = 0.0
    copies = 0
    for done in range(0, steps, per_copy):
        t_copies += copy.time()
        copies += 1
        for _ in range(min(per_copy, steps - done)):
            t_steps += seconds(lambda: model(token, s, mode="recurrent"))
    return t_steps / steps, t_copies / (copies * copy.bytes)


# ---------------------------------------------------------------------------------------------- profile
def wrap_scopes(model: RWKV4) -> None:
    """Name every WKV call, the fused decode step and the head in the profile (kernels are not aten ops)."""
    def named(name, fn):
        def inner(*args, **kwargs):
            with record_function(name):
                return fn(*args, **kwargs)
        return inner
    rwkv4_module.wkv = named("wkv", rwkv4_module.wkv)
    rwkv4_module.wkv_step = named("wkv", rwkv4_module.wkv_step)
    rwkv4_fused.body_step = named("fused step", rwkv4_fused.body_step)
    for name in ("shift_mix", "relu_square_", "sigmoid_mul_"):
        setattr(rwkv4_fused, name, named("fused mixing", getattr(rwkv4_fused, name)))
    model.logits = named("head", model.logits)


def category(event) -> str | None:
    scopes = set()
    parent = event.cpu_parent
    while parent is not None:
        scopes.add(parent.name)
        parent = parent.cpu_parent
    name = event.name.rstrip("_")
    if name == "wkv" or "wkv" in scopes:
        return "WKV"
    if name == "head" or "head" in scopes:
        return "head and log-softmax"
    if name == "fused step":  # its own time is its loops; the ATen calls inside are counted as themselves
        return "fused step's loops (WKV, mixing)"
    if name in GEMMS:
        return "GEMM (body)"
    if name in NORMS:
        return "layer norms"
    if name in MIXING or name == "fused mixing":
        return "token shift and mixing"
    if name.startswith("aten::"):
        return "copies and indexing"
    return None  # profiler bookkeeping


def breakdown(fn) -> dict[str, float]:
    """Seconds per category of one call of `fn` under the profiler; the rest of its wall time is overhead."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = seconds(fn)
    parts = defaultdict(float)
    for event in prof.events():
        cat = category(event)
        if cat is not None:
            parts[cat] += event.self_cpu_time_total / 1e6
    parts["framework overhead"] = max(wall - sum(parts.values()), 0.0)
    return {c: parts.get(c, 0.0) for c in CATEGORIES}


def shares_table(title: str, parts: dict[str, float]) -> str:
    total = sum(parts.values())
    rows = [f"| {c} | {s * 1e3:.2f} | {100 * s / total:.1f}% |" for c, s in parts.items()]
    return "\n".join([f"**{title}** (profiled, {total * 1e3:.1f} ms)", "", "| part | ms | share |", "|---|---|---|",
                      *rows])


def spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f}x (rounds {', '.join(f'{x:.2f}' for x in xs)})"


def main() -> None:
    ap = rwkv4_parser()
    ap.add_argument("--chunk", type=int, default=1024, help="forward chunk size (tokens per hidden call)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--decode-steps", type=int, default=16, help="decode steps per round")
    args = ap.parse_args()
    allocator_policy = apply_process_options(args)
    size, T = SIZES[args.size], args.tokens
    C, L = size.n_embd, size.n_layer
    model = random_rwkv4(args.size)
    tokens = torch.randint(0, VOCAB, (1, T))
    body_params = rwkv4_body_params(model)
    step_bytes = (model.num_parameters() - VOCAB * C + C) * 4  # every weight once, one embedding row
    gemms = {n: rwkv4_body_gemms(model, n) for n in {min(args.chunk, T), T % args.chunk} if n}
    copy = Copy()
    load_before = load_average()

    forward_x, forward_ops_x, decode_x, decode_ops_x, gemm_rates, bandwidths = [], [], [], [], [], []
    with torch.inference_mode():
        _, state = model(tokens[:, :1024], chunk_size=1024, last_only=True)  # decode at context 1,024
        token = tokens[:, :1]
        forward_round(model, tokens[:, :args.chunk], args.chunk, gemms)  # warm-up
        decode_round(model, state, token, 2, copy)
        for _ in range(args.rounds):  # alternate, so drift hits both alike
            for fused in (True, False):  # with the fused kernels, and as PyTorch ops only
                rwkv4_fused.ENABLED = fused
                t_model, t_gemm = forward_round(model, tokens, args.chunk, gemms)
                (forward_x if fused else forward_ops_x).append(t_model / t_gemm)
                gemm_rates.append(2 * body_params * T / t_gemm)
            for fused in (True, False):  # the fused body step, and the same step as PyTorch ops
                rwkv4_fused.ENABLED = fused
                t_step, s_per_byte = decode_round(model, state, token, args.decode_steps, copy)
                (decode_x if fused else decode_ops_x).append(t_step / (step_bytes * s_per_byte))
                bandwidths.append(1 / s_per_byte)
            rwkv4_fused.ENABLED = True
        load_after = load_average()
        wrap_scopes(model)
        forward_parts = breakdown(lambda: model(tokens, chunk_size=args.chunk, last_only=True))

        def decode():
            s = state.clone()
            for _ in range(args.decode_steps):
                model(token, s, mode="recurrent")
        decode_parts = {c: s / args.decode_steps for c, s in breakdown(decode).items()}

    env = environment("cpu", "float32")
    flops, bandwidth = statistics.median(gemm_rates), statistics.median(bandwidths)
    print(f"{env['cpu']}, {torch.get_num_threads()} threads, rwkv4-{args.size} shape ({L} x {C}), fp32, "
          f"[{implementation_name('cpu')}]; load average {load_before} before, {load_after} after; "
          f"GEMM {flops / 1e9:.1f} GFLOP/s on the model's shapes, copy bandwidth {bandwidth / 1e9:.1f} GB/s "
          f"(medians of {args.rounds} rounds); allocator: {allocator_policy}\n")
    print(f"- forward over {T} tokens (chunks of {args.chunk}) / its GEMMs alone: {spread(forward_x)}; "
          f"as PyTorch ops only (fused kernels off): {spread(forward_ops_x)}")
    print(f"- decode step at context 1024 / memory bound ({step_bytes / 1e6:.0f} MB read): {spread(decode_x)}; "
          f"the same step as PyTorch ops (fused kernels off): {spread(decode_ops_x)}\n")
    print(shares_table(f"forward, {T} tokens", forward_parts) + "\n")
    print(shares_table("decode, one step", decode_parts))
    write_result(f"profile_rwkv_{args.size}.json", {
        "environment": env, "allocator": allocator_policy, "load_average_before": load_before,
        "load_average_after": load_after,
        "size": args.size, "tokens": T, "chunk": args.chunk, "gemm_flops_per_s": gemm_rates,
        "copy_bandwidth_bytes_per_s": bandwidths, "forward_x_roofline": forward_x,
        "forward_ops_x_roofline": forward_ops_x, "decode_x_memory_bound": decode_x,
        "decode_ops_x_memory_bound": decode_ops_x,
        "step_bytes": step_bytes, "forward_parts_s": forward_parts, "decode_step_parts_s": decode_parts})


if __name__ == "__main__":
    main()
