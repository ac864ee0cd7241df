"""Our RWKV-4 vs transformers' RwkvModel on the same random weights: one forward over T tokens, CPU.

Matrix products dominate, so both are measured against a roofline taken in the same run:
    roofline_s = 2 x (matrix-product parameters) x T / (GEMM FLOP/s measured here)
Usage: python benchmarks/model_forward.py [--size 169m] [--tokens 4096] [--repeats 3]
Prints a Markdown table and writes benchmarks/results/model_forward.json with the environment.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from rwkv_bench.models.loaders import blinkdl_to_hf_state_dict
from rwkv_bench.models.presets import SIZES, VOCAB
from rwkv_bench.models.rwkv4 import RWKV4, RWKVConfig, init_random_
from rwkv_bench.ops.wkv import implementation_name
from rwkv_bench.recording import environment, write_json


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations, kernel build
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_flops_per_s(T: int, C: int, repeats: int) -> float:
    """FLOP/s of the model's own GEMM shapes (T x C times C x 4C), the best this machine does."""
    a, b = torch.randn(T, C), torch.randn(C, 4 * C)
    return 2 * T * C * 4 * C / median_time(lambda: a @ b, repeats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="169m", choices=list(SIZES))
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    size, T = SIZES[args.size], args.tokens
    from transformers import RwkvConfig, RwkvForCausalLM

    ours = init_random_(RWKV4(RWKVConfig(vocab_size=VOCAB, n_layer=size.n_layer, n_embd=size.n_embd))).eval()
    hf = RwkvForCausalLM(RwkvConfig(vocab_size=VOCAB, hidden_size=size.n_embd, num_hidden_layers=size.n_layer,
                                    attention_hidden_size=size.n_embd, intermediate_size=4 * size.n_embd,
                                    rescale_every=0, tie_word_embeddings=False)).eval()
    hf.load_state_dict(blinkdl_to_hf_state_dict(ours.state_dict()))
    tokens = torch.randint(0, VOCAB, (1, T))
    C, L = size.n_embd, size.n_layer
    body_params = L * 13 * C * C  # per layer: k, v, r, output (4 C^2) + ffn key, value (8 C^2) + receptance (C^2)
    flops = gemm_flops_per_s(T, C, args.repeats)
    roofline = 2 * body_params * T / flops

    with torch.inference_mode():
        rows = [
            ("transformers RwkvModel (no head)", median_time(lambda: hf.rwkv(input_ids=tokens), args.repeats)),
            (f"ours, last position only [{implementation_name('cpu')}]",
             median_time(lambda: ours(tokens, chunk_size=T, last_only=True), args.repeats)),
        ]
    print(f"T={T}, C={C}, layers={L}, threads={torch.get_num_threads()}, GEMM {flops / 1e9:.1f} GFLOP/s, "
          f"roofline {roofline:.3f} s\n")
    print("| implementation | forward_s | x roofline |\n|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {t / roofline:.2f} |")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    write_json(out / "model_forward.json", {
        "environment": environment("cpu", "float32"), "tokens": T, "size": args.size,
        "gemm_flops_per_s": flops, "roofline_s": roofline,
        "rows": [{"impl": n, "forward_s": t, "x_roofline": t / roofline} for n, t in rows]})


if __name__ == "__main__":
    main()
