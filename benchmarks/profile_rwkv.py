"""Where our RWKV's time goes: the forward over T tokens and one decode step, broken into GEMM, WKV, layer
norms, token shift and mixing, head and log-softmax, copies and framework overhead, each as a share of the
total, beside the two hardware limits measured in the same run:

    forward roofline = 2 x (body matrix-product parameters) x T / (GEMM FLOP/s on the model's own shapes)
    decode bound     = bytes a step must read (every weight once; one embedding row) / (copy bandwidth)

The copy bandwidth is STREAM's "copy": a 512 MiB float32 tensor copied, read + write bytes over the time.
Shares come from torch.profiler (self time of each aten op, grouped by what it does; the WKV calls are
wrapped in a record_function here, so the model's code is not touched); what the profiler does not see
(Python, dispatch) is "framework overhead". Rounds alternate forward and decode so machine drift hits both;
the ratios are medians over rounds, with their spread.

Usage: python benchmarks/profile_rwkv.py [--size 169m] [--tokens 4096] [--rounds 5] [--threads N]
Prints Markdown and writes benchmarks/results/profile_rwkv.json with the environment.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from rwkv_bench.models import rwkv4 as rwkv4_module
from rwkv_bench.models.presets import SIZES, VOCAB
from rwkv_bench.models.rwkv4 import RWKV4, RWKVConfig, init_random_
from rwkv_bench.ops.wkv import implementation_name
from rwkv_bench.recording import environment, write_json

CATEGORIES = ("GEMM (body)", "WKV", "layer norms", "token shift and mixing", "head and log-softmax",
              "copies and indexing", "framework overhead")
NORMS = {"aten::layer_norm", "aten::native_layer_norm"}
GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::mv", "aten::addmv"}
MIXING = {"aten::cat", "aten::sub", "aten::addcmul", "aten::mul", "aten::mul_", "aten::sigmoid", "aten::relu",
          "aten::square", "aten::square_", "aten::pow", "aten::exp", "aten::add", "aten::add_", "aten::neg",
          "aten::rsub", "aten::sigmoid_", "aten::relu_"}
HEAD = {"aten::log_softmax", "aten::_log_softmax", "aten::logsumexp", "aten::gather"}


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_flops_per_s(T: int, C: int, repeats: int = 5) -> float:
    """FLOP/s on the model's own shapes: (T x C) @ (C x C) and (T x C) @ (C x 4C), the better of the two."""
    a = torch.randn(T, C)
    rates = [2 * T * C * n / median_time(lambda b=torch.randn(C, n): a @ b, repeats) for n in (C, 4 * C)]
    return max(rates)


def copy_bandwidth(mib: int = 512, repeats: int = 5) -> float:
    """Bytes per second moved by a STREAM-style copy (read + write)."""
    a = torch.ones(mib * 2**20 // 4)
    b = torch.empty_like(a)
    return 2 * a.numel() * 4 / median_time(lambda: b.copy_(a), repeats)


def wrap_wkv() -> None:
    """Name every WKV call in the profile (the kernels are not aten ops)."""
    def named(fn):
        def inner(*args, **kwargs):
            with record_function("wkv"):
                return fn(*args, **kwargs)
        return inner
    rwkv4_module.wkv = named(rwkv4_module.wkv)
    rwkv4_module.wkv_step = named(rwkv4_module.wkv_step)


def category(name: str, shapes, vocab: int) -> str | None:
    if name == "wkv":
        return "WKV"
    if name in GEMMS:
        return "head and log-softmax" if any(s and s[-1] == vocab for s in shapes) else "GEMM (body)"
    if name in NORMS:
        return "layer norms"
    if name in MIXING:
        return "token shift and mixing"
    if name in HEAD:
        return "head and log-softmax"
    if name.startswith("aten::"):
        return "copies and indexing"
    return None  # profiler bookkeeping, our own record_function scopes


def breakdown(fn, vocab: int) -> dict[str, float]:
    """Seconds per category of one call of `fn` under the profiler; the rest of its wall time is overhead."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    seconds = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        cat = category(event.key, event.input_shapes or [], vocab)
        if cat is not None:
            seconds[cat] += event.self_cpu_time_total / 1e6
    seconds["framework overhead"] = max(wall - sum(seconds.values()), 0.0)
    return {c: seconds.get(c, 0.0) for c in CATEGORIES}


def shares_table(title: str, parts: dict[str, float]) -> str:
    total = sum(parts.values())
    rows = [f"| {c} | {s * 1e3:.2f} | {100 * s / total:.1f}% |" for c, s in parts.items()]
    return "\n".join([f"**{title}** (profiled, {total * 1e3:.1f} ms)", "", "| part | ms | share |", "|---|---|---|",
                      *rows])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="169m", choices=list(SIZES))
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size, T = SIZES[args.size], args.tokens
    C, L = size.n_embd, size.n_layer
    model = init_random_(RWKV4(RWKVConfig(vocab_size=VOCAB, n_layer=L, n_embd=C))).eval()
    tokens = torch.randint(0, VOCAB, (1, T))
    body_params = L * 13 * C * C  # per layer: k, v, r, output (4 C^2), ffn key, value (8 C^2), receptance (C^2)
    step_bytes = (model.num_parameters() - VOCAB * C + C) * 4  # every weight once, one embedding row
    _, state = model(tokens[:, :1024], chunk_size=1024, last_only=True)

    def forward():
        model(tokens, chunk_size=1024, last_only=True)

    def decode():
        s = state.clone()
        token = tokens[:, :1]
        for _ in range(args.decode_steps):
            model(token, s, mode="recurrent")

    forward_x, decode_x, gemm_rates, bandwidths = [], [], [], []
    with torch.inference_mode():
        forward()
        decode()
        for _ in range(args.rounds):  # alternate, so drift hits both alike
            flops, bandwidth = gemm_flops_per_s(T, C), copy_bandwidth()
            gemm_rates.append(flops)
            bandwidths.append(bandwidth)
            forward_x.append(median_time(forward, 1) / (2 * body_params * T / flops))
            decode_x.append(median_time(decode, 1) / args.decode_steps / (step_bytes / bandwidth))
        wrap_wkv()
        forward_parts = breakdown(forward, VOCAB)
        decode_parts = {c: s / args.decode_steps for c, s in breakdown(decode, VOCAB).items()}

    env = environment("cpu", "float32")
    flops, bandwidth = statistics.median(gemm_rates), statistics.median(bandwidths)
    print(f"{env['cpu']}, {torch.get_num_threads()} threads, rwkv4-{args.size} shape ({L} x {C}), fp32, "
          f"[{implementation_name('cpu')}]; GEMM {flops / 1e9:.1f} GFLOP/s, copy bandwidth {bandwidth / 1e9:.1f} GB/s "
          f"(medians of {args.rounds} rounds)\n")
    print(f"- forward over {T} tokens / GEMM roofline: median {statistics.median(forward_x):.2f}x "
          f"(rounds {', '.join(f'{x:.2f}' for x in forward_x)})")
    print(f"- decode step / memory bound ({step_bytes / 1e6:.0f} MB read): median {statistics.median(decode_x):.2f}x "
          f"(rounds {', '.join(f'{x:.2f}' for x in decode_x)})\n")
    print(shares_table(f"forward, {T} tokens", forward_parts) + "\n")
    print(shares_table("decode, one step", decode_parts))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    write_json(out / "profile_rwkv.json", {
        "environment": env, "size": args.size, "tokens": T, "gemm_flops_per_s": gemm_rates,
        "copy_bandwidth_bytes_per_s": bandwidths, "forward_x_roofline": forward_x, "decode_x_memory_bound": decode_x,
        "step_bytes": step_bytes, "forward_parts_s": forward_parts, "decode_step_parts_s": decode_parts})


if __name__ == "__main__":
    main()
