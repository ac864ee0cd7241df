"""Our RWKV-7 on the CPU, random weights at rwkv7-0.1b's shape (12 x 768, vocabulary 50304: the shape of
BlinkDL's RWKV-x070-Pile-168M), in one process:

1. one forward over T tokens (last position's logits, as benchmarks/model_forward.py does for RWKV-4) against
   the roofline of its matrix products, measured in the same run:
       roofline_s = 2 x (matrix parameters of the blocks, LoRAs included) x T / (GEMM FLOP/s measured here)
2. WKV-7's share of that forward (the kernel's calls timed inside it);
3. the same forward in BlinkDL's `rwkv` package 0.8.32 (x070, cpu fp32, its CPU path) on the same weights;
4. decode: one state advanced to position --late, another kept near 1,000 (restarted from a 1,000-token state
   every --early steps); their steps alternate, so a shared machine's drift hits both alike. Memory (RSS)
   before and after the decode steps.
Usage: python benchmarks/rwkv7_forward.py [--tokens 4096] [--repeats 3] [--late 100000] [--steps 400]
                                         [--threads N] [--skip-decode]
On a shared machine, --threads 1 keeps other processes from stalling every parallel region (they then cost
time in proportion, for the GEMM, ours and the package alike). Prints a Markdown table and writes
benchmarks/results/rwkv7_forward[-threadsN][-nodecode].json with the environment.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.update(RWKV_V7_ON="1", RWKV_JIT_ON="0", RWKV_CUDA_ON="0")  # read by the rwkv package at import

import psutil  # noqa: E402
import torch  # noqa: E402

import rwkv_bench.models.rwkv7 as rwkv7_module  # noqa: E402
from rwkv_bench.models.presets import RWKV7_VOCAB, SIZES  # noqa: E402
from rwkv_bench.models.rwkv7 import RWKV7, RWKV7Config, init_random_  # noqa: E402
from rwkv_bench.models.rwkv7_loaders import save_blinkdl_pth  # noqa: E402
from rwkv_bench.ops.wkv7 import implementation_name  # noqa: E402
from rwkv_bench.recording import environment  # noqa: E402

from _timing import add_process_options, apply_process_options, median_time, write_result  # noqa: E402


def gemm_flops_per_s(T: int, C: int, repeats: int) -> float:
    """FLOP/s of the model's own largest GEMM shape (T x C times C x 4C)."""
    a, b = torch.randn(T, C), torch.randn(C, 4 * C)
    return 2 * T * C * 4 * C / median_time(lambda: a @ b, repeats)


def wkv_seconds(model, tokens) -> tuple[float, float]:
    """(forward seconds, seconds spent inside WKV-7) of one forward, the kernel's calls timed in place."""
    spent = [0.0]
    inner = rwkv7_module.wkv7

    def timed(*args):
        t0 = time.perf_counter()
        y = inner(*args)
        spent[0] += time.perf_counter() - t0
        return y

    rwkv7_module.wkv7 = timed
    try:
        t0 = time.perf_counter()
        model(tokens, last_only=True)
        return time.perf_counter() - t0, spent[0]
    finally:
        rwkv7_module.wkv7 = inner


def decode(model, late_tokens: int, steps: int, early_every: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, RWKV7_VOCAB, (1, late_tokens), generator=g)
    t0 = time.perf_counter()
    late = model.advance(prompt)
    prefill_s = time.perf_counter() - t0
    early_start = model.advance(prompt[:, :1000])

    def step(token, state):
        t = time.perf_counter()
        logits, state = model(token, state, mode="recurrent")
        nxt = logits[:, -1].argmax(-1, keepdim=True)     # greedy, and waits for the result
        return nxt, state, time.perf_counter() - t

    token_late = token_early = torch.tensor([[1]])
    early, early_t, late_t = None, [], []
    rss_before = psutil.Process().memory_info().rss
    for i in range(steps):
        if i % early_every == 0:
            early = early_start.clone()
        token_late, late, dt = step(token_late, late)
        late_t.append(dt)
        token_early, early, dt = step(token_early, early)
        early_t.append(dt)
    rss_after = psutil.Process().memory_info().rss
    early_ms, late_ms = statistics.median(early_t) * 1e3, statistics.median(late_t) * 1e3
    return {"late_position": late_tokens, "steps_each": steps, "early_positions": f"1000-{1000 + early_every}",
            "prefill_late_s": prefill_s, "early_ms_per_token": early_ms, "late_ms_per_token": late_ms,
            "late_over_early": late_ms / early_ms, "rss_before_decode_mb": rss_before / 2**20,
            "rss_after_decode_mb": rss_after / 2**20, "state_bytes": model.state_bytes(1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--late", type=int, default=100_000, help="position of the late decode state")
    ap.add_argument("--steps", type=int, default=400, help="timed decode steps of each state")
    ap.add_argument("--early", type=int, default=50, help="the early state restarts from 1,000 tokens this often")
    ap.add_argument("--skip-decode", action="store_true", help="only the forward (the decode part prefills --late)")
    add_process_options(ap)
    args = ap.parse_args()
    allocator_policy = apply_process_options(args)
    size, T = SIZES["0.1b"], args.tokens
    config = RWKV7Config(vocab_size=RWKV7_VOCAB, n_layer=size.n_layer, n_embd=size.n_embd)
    ours = init_random_(RWKV7(config), seed=0).eval()
    tokens = torch.randint(0, RWKV7_VOCAB, (1, T), generator=torch.Generator().manual_seed(1))
    body_params = sum(p.numel() for n, p in ours.named_parameters() if p.dim() == 2 and n.startswith("blocks."))
    flops = gemm_flops_per_s(T, config.n_embd, args.repeats)
    roofline = 2 * body_params * T / flops

    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        path = Path(tmp) / "x070-0.1b.pth"
        save_blinkdl_pth(ours, path)
        from rwkv.model import RWKV

        theirs = RWKV(model=str(path.with_suffix("")), strategy="cpu fp32")
        ids = tokens[0].tolist()
        ours_s = median_time(lambda: ours(tokens, last_only=True), args.repeats)
        forward_s, wkv_s = wkv_seconds(ours, tokens)
        theirs_s = median_time(lambda: theirs.forward(ids, None), max(1, args.repeats - 2))
        ours_last = ours(tokens, last_only=True)[0][0, -1]
        theirs_last = theirs.forward(ids, None)[0].float()
        agreement = float((ours_last - theirs_last).abs().max() / theirs_last.abs().max())
        dec = None if args.skip_decode else decode(ours, args.late, args.steps, args.early)

    rows = [(f"ours, last position only [{implementation_name('cpu')}]", ours_s),
            ("rwkv package 0.8.32 (x070, cpu fp32)", theirs_s)]
    print(f"rwkv7-0.1b shape, T={T}, threads={torch.get_num_threads()}, GEMM {flops / 1e9:.1f} GFLOP/s, "
          f"roofline {roofline:.3f} s, CPU: {environment('cpu')['cpu']}; allocator: {allocator_policy}\n")
    print("| implementation | forward_s | x roofline |\n|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {t / roofline:.2f} |")
    print(f"\nours vs the rwkv package: {theirs_s / ours_s:.2f}x faster; last logits agree to {agreement:.2e} "
          f"(relative)\nWKV-7: {wkv_s:.3f} s of a {forward_s:.3f} s forward ({wkv_s / forward_s:.1%})")
    if dec:
        print(f"decode: {dec['early_ms_per_token']:.2f} ms/token near position 1,000, {dec['late_ms_per_token']:.2f} "
              f"ms/token after {args.late:,} (late / early {dec['late_over_early']:.3f}; prefill "
              f"{dec['prefill_late_s']:.0f} s); RSS {dec['rss_before_decode_mb']:.0f} -> "
              f"{dec['rss_after_decode_mb']:.0f} MiB over {2 * args.steps} steps; state {dec['state_bytes']:,} bytes")
    name = "rwkv7_forward" + (f"-threads{args.threads}" if args.threads else "") + ("-nodecode" if dec is None else "")
    write_result(f"{name}.json", {
        "environment": environment("cpu", "float32"), "allocator": allocator_policy, "tokens": T, "shape": "rwkv7-0.1b (12 x 768, vocab 50304)",
        "gemm_flops_per_s": flops, "roofline_s": roofline, "body_matrix_params": body_params,
        "rows": [{"impl": n, "forward_s": t, "x_roofline": t / roofline} for n, t in rows],
        "ours_speedup_vs_rwkv_package": theirs_s / ours_s, "last_logits_max_rel_diff": agreement,
        "wkv7_s": wkv_s, "wkv7_share_of_forward": wkv_s / forward_s, "forward_s_instrumented": forward_s,
        "decode": dec, "units": "seconds, milliseconds per token, MiB, bytes as named"})


if __name__ == "__main__":
    main()
