"""Our RWKV-4 vs transformers' RwkvModel on the same random weights: one forward over T tokens, CPU.

Matrix products dominate, so both are measured against a roofline taken in the same run, in alternating
rounds (the machine may be shared: drift hits all three alike):
    roofline_s = the body's own matrix products (its weights, its shapes) for the T tokens, timed alone
Each round times the roofline, transformers and ours once; the table gives each one's median ratio over
rounds and every round's value.
Usage: python benchmarks/model_forward.py [--size 169m] [--tokens 4096] [--rounds 3]
Prints a Markdown table and writes benchmarks/results/model_forward.json with the environment.
"""
from __future__ import annotations

import statistics

import torch

from rwkv_bench.models.loaders import blinkdl_to_hf_state_dict
from rwkv_bench.models.presets import SIZES, VOCAB
from rwkv_bench.ops.wkv import implementation_name
from rwkv_bench.recording import environment, load_average

from _timing import random_rwkv4, rwkv4_body_gemms, rwkv4_body_params, rwkv4_parser, seconds, write_result


def main() -> None:
    ap = rwkv4_parser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size, T = SIZES[args.size], args.tokens
    from transformers import RwkvConfig, RwkvForCausalLM

    ours = random_rwkv4(args.size)
    hf = RwkvForCausalLM(RwkvConfig(vocab_size=VOCAB, hidden_size=size.n_embd, num_hidden_layers=size.n_layer,
                                    attention_hidden_size=size.n_embd, intermediate_size=4 * size.n_embd,
                                    rescale_every=0, tie_word_embeddings=False)).eval()
    hf.load_state_dict(blinkdl_to_hf_state_dict(ours.state_dict()))
    tokens = torch.randint(0, VOCAB, (1, T))
    C, L = size.n_embd, size.n_layer
    body_params = rwkv4_body_params(ours)
    runs = {
        "roofline": rwkv4_body_gemms(ours, T),
        "transformers RwkvModel (no head)": lambda: hf.rwkv(input_ids=tokens),
        f"ours, last position only [{implementation_name('cpu')}]": lambda: ours(tokens, chunk_size=T, last_only=True),
    }
    times = {name: [] for name in runs}
    with torch.inference_mode():
        for fn in runs.values():
            fn()  # warm-up: first-call allocations, kernel build
        for _ in range(args.rounds):
            for name, fn in runs.items():
                times[name].append(seconds(fn))
    roofline = times.pop("roofline")
    ratios = {name: [t / r for t, r in zip(ts, roofline)] for name, ts in times.items()}
    flops = 2 * body_params * T / statistics.median(roofline)
    print(f"T={T}, C={C}, layers={L}, threads={torch.get_num_threads()}, load average {load_average()}, "
          f"GEMM {flops / 1e9:.1f} GFLOP/s on the model's shapes, roofline {statistics.median(roofline):.3f} s "
          f"(medians of {args.rounds} rounds)\n")
    print("| implementation | forward_s | x roofline (median) | x roofline (rounds) |\n|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {statistics.median(ratios[name]):.2f} | "
              f"{', '.join(f'{x:.2f}' for x in ratios[name])} |")
    write_result("model_forward.json", {
        "environment": environment("cpu", "float32"), "tokens": T, "size": args.size,
        "gemm_flops_per_s": flops, "roofline_s": roofline, "load_average": load_average(),
        "rows": [{"impl": n, "forward_s": ts, "x_roofline": ratios[n]} for n, ts in times.items()]})


if __name__ == "__main__":
    main()
