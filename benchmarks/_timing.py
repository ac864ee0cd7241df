"""What the benchmarks share: wall-clock timing, the RWKV-4 benchmarks' options and model, the RWKV-4 body's
matrix products (the roofline's work), and where results are written."""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rwkv_bench import allocator
from rwkv_bench.models.presets import SIZES, VOCAB
from rwkv_bench.models.rwkv4 import RWKV4, RWKVConfig, init_random_
from rwkv_bench.recording import write_json

RESULTS = Path(__file__).parent / "results"


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations, kernel build, TorchScript compilation
    return statistics.median(seconds(fn) for _ in range(repeats))


def add_process_options(ap: argparse.ArgumentParser) -> None:
    """--threads and --default-allocator: how the benchmark's process runs (see `apply_process_options`)."""
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's default thresholds (freed buffers go back to the OS and page-fault in "
                         "again on the next pass) instead of the policy every scaling child runs under")


def apply_process_options(args) -> str:
    """Set the threads and the allocator policy, as a scaling child does; returns the policy in words."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.default_allocator:
        return "glibc's default thresholds"
    allocator.keep_freed_memory()
    return allocator.policy()


def rwkv4_parser() -> argparse.ArgumentParser:
    """The options every RWKV-4 benchmark takes: the model's --size (a preset), the forward's --tokens, and
    the process options."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="169m", choices=list(SIZES))
    ap.add_argument("--tokens", type=int, default=4096)
    add_process_options(ap)
    return ap


def random_rwkv4(size: str) -> RWKV4:
    """Our RWKV-4 at a preset's shape, random weights, in eval mode."""
    shape = SIZES[size]
    return init_random_(RWKV4(RWKVConfig(vocab_size=VOCAB, n_layer=shape.n_layer, n_embd=shape.n_embd))).eval()


def rwkv4_body_params(model: RWKV4) -> int:
    """Parameters of the body's matrix products (what rwkv4_body_gemms multiplies): per layer k, v, r, output
    (4 C^2), ffn key and value (8 C^2) and receptance (C^2)."""
    C = model.config.n_embd
    return model.config.n_layer * 13 * C * C


def rwkv4_body_gemms(model, rows: int):
    """A function doing the matrix products an RWKV-4 body does for `rows` token positions, with its weights."""
    C, H = model.config.n_embd, model.config.ffn_dim
    x_c, x_h = torch.randn(rows, C), torch.randn(rows, H)

    def run():
        for block in model.blocks:
            att, ffn = block.att, block.ffn
            for linear in (att.key, att.value, att.receptance, att.output, ffn.key, ffn.receptance):
                F.linear(x_c, linear.weight)
            F.linear(x_h, ffn.value.weight)
    return run


def write_result(name: str, data: dict) -> Path:
    """benchmarks/results/<name>: the data (with its environment and units) as JSON."""
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / name, data)
    return RESULTS / name
