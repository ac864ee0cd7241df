"""`rwkv-bench kernels`: time the WKV implementations on the same inputs and check that they agree.

Implementations: our PyTorch reference, our compiled kernel for the device (CPU C++ or CUDA), and
transformers' own `rwkv_linear_attention_cpu` (what `RwkvForCausalLM` runs on a CPU). Errors are measured
against the reference in float64, so every row's `max_abs_err` is the distance to the exact recurrence.
Then the same for WKV-7 (RWKV-7's operator, ops/wkv7.py; `op` says which): its reference and its kernel.
"""
from __future__ import annotations

import torch

from . import wkv as wkv_ops
from .wkv_reference import wkv_reference


def random_inputs(batch: int, length: int, channels: int, device: str, seed: int = 0):
    """Inputs in the range a trained RWKV-4 produces: decays spread over orders of magnitude, k ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    time_decay = torch.randn(channels, generator=gen) * 2.0        # w = -exp(time_decay)
    u = torch.randn(channels, generator=gen) * 0.5
    k = torch.randn(batch, length, channels, generator=gen)
    v = torch.randn(batch, length, channels, generator=gen)
    return (x.to(device) for x in (time_decay, u, k, v))


def time_call(fn, min_run_time_s: float = 0.3) -> float:
    """Median time of fn() in milliseconds, by torch.utils.benchmark.Timer.

    The Timer warms up, picks how many calls to time per block, synchronises CUDA around each block and
    reports the median over blocks. It runs with the current torch.get_num_threads() (its default, 1,
    would time another configuration than the one the model runs with).
    """
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time_s).median * 1e3


def _implementations(device: str):
    """(name, fn(time_decay, u, k, v) -> y) for every implementation that can run on `device`."""
    impls = [("reference", lambda td, u, k, v: wkv_ops.wkv_reference(-torch.exp(td), u, k, v)[0])]
    kernel = wkv_ops.implementation_name(device)
    if kernel != "reference":
        impls.append((kernel, lambda td, u, k, v: wkv_ops.wkv(-torch.exp(td), u, k, v)[0]))
    if device == "cpu":
        from transformers.models.rwkv.modeling_rwkv import rwkv_linear_attention_cpu

        impls.append(("transformers-cpu", lambda td, u, k, v: rwkv_linear_attention_cpu(td, u, k, v)[0]))
    return impls


def run_kernel_benchmark(lengths: list[int], channels: int = 768, batch: int = 1, device: str = "cpu",
                         progress: bool = True) -> list[dict]:
    """One row per (implementation, T): impl, device, B, T, C, ms, speedup_vs_transformers, max_abs_err."""
    from ..console import progress_bar

    rows: list[dict] = []
    impls = _implementations(device)
    with progress_bar(progress, transient=True) as bar, torch.no_grad():
        task = bar.add_task("WKV implementations", total=len(lengths) * len(impls))
        for T in lengths:
            td, u, k, v = random_inputs(batch, T, channels, device)
            exact = wkv_reference(-torch.exp(td.double()), u.double(), k.double(), v.double())[0]
            block = []
            for name, fn in impls:
                bar.update(task, description=f"{name} T={T}")
                y = fn(td, u, k, v)
                block.append(dict(op="wkv4", impl=name, device=device, B=batch, T=T, C=channels,
                                  ms=time_call(lambda: fn(td, u, k, v)),
                                  max_abs_err=float((y.double() - exact).abs().max())))
                bar.advance(task)
            base = next((r["ms"] for r in block if r["impl"] == "transformers-cpu"), None)
            for r in block:
                r["speedup_vs_transformers"] = base / r["ms"] if base else None
            rows.extend(block)
        rows.extend(wkv7_rows(lengths, channels, batch, device, bar))
    return rows


def wkv7_inputs(batch: int, length: int, channels: int, device: str, seed: int = 0):
    """r, w, k, v, a, b as RWKV-7 produces them (decays in (0.545, 1), a unit removal direction per head of
    64, a in (0, 1)) and a zero state."""
    gen = torch.Generator().manual_seed(seed)
    H, N = channels // 64, 64
    r, k, v = (torch.randn(batch, length, channels, generator=gen) for _ in range(3))
    w = torch.exp(-0.6065 * torch.rand(batch, length, channels, generator=gen))
    kk = torch.nn.functional.normalize(torch.randn(batch, length, H, N, generator=gen), dim=-1).flatten(2)
    a = torch.rand(batch, length, channels, generator=gen)
    return [t.to(device) for t in (r, w, k, v, -kk, kk * a)], torch.zeros(batch, H, N, N, device=device)


def wkv7_rows(lengths: list[int], channels: int, batch: int, device: str, bar) -> list[dict]:
    """WKV-7 rows: the reference and the kernel, each from a zero state, errors against float64."""
    from . import wkv7 as ops

    if channels % 64:
        return []
    impls = [("reference", ops.wkv7_reference)]
    kernel = ops.implementation_name(device)
    if kernel != "reference":
        impls.append((kernel, ops.wkv7))
    rows = []
    task = bar.add_task("WKV-7 implementations", total=len(lengths) * len(impls))
    for T in lengths:
        args, zero = wkv7_inputs(batch, T, channels, device)
        exact = ops.wkv7_reference(*(t.double() for t in args), zero.double().clone())
        for name, fn in impls:
            bar.update(task, description=f"WKV-7 {name} T={T}")
            y = fn(*args, zero.clone())
            rows.append(dict(op="wkv7", impl=name, device=device, B=batch, T=T, C=channels,
                             ms=time_call(lambda: fn(*args, zero.clone())),
                             max_abs_err=float((y.double() - exact).abs().max()), speedup_vs_transformers=None))
            bar.advance(task)
    return rows
