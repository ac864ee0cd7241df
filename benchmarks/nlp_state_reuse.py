"""Our lm-eval model (state reuse) vs lm-eval's own `hf` model on the same RWKV weights, local MC task.

The weights are a random RWKV-4 preset saved as a Hugging Face RwkvForCausalLM directory; `rwkv-bench nlp`
runs it once through our model and once, with the `transformers:` prefix, through lm-eval's `hf`.
Usage: python benchmarks/nlp_state_reuse.py [--preset rwkv4-small] [--tasks rwkv_bench_mc]
Prints tokens processed and time per runner, from the run's tokens.csv.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from rwkv_bench.nlp.evaluate import run_nlp, save_hf_tokenizer
from rwkv_bench.scaling.sweep import save_peer
from rwkv_bench.tokenizer import neox_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="rwkv4-small")
    ap.add_argument("--tasks", default="rwkv_bench_mc")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / args.preset
        tokenizer = neox_tokenizer()
        save_peer(args.preset, weights, seed=0, tokenizer=tokenizer.name)
        save_hf_tokenizer(tokenizer, weights)
        run_dir = run_nlp([str(weights), f"transformers:{weights}"], args.tasks, out=args.out,
                          bootstrap_iters=100)
    tokens = pd.read_csv(run_dir / "tokens.csv")
    print(tokens[["runner", "task", "requests", "tokens_processed", "tokens_reencode", "model_time_s", "wall_s"]]
          .to_markdown(index=False))
    ours, hf = (tokens[tokens.runner == r].iloc[0] for r in ("rwkv-bench", "lm-eval hf"))
    print(f"\nhf / ours: tokens {hf.tokens_processed / ours.tokens_processed:.2f}x, "
          f"model time {hf.model_time_s / ours.model_time_s:.2f}x, wall {hf.wall_s / ours.wall_s:.2f}x")
    print(f"results in {run_dir}")


if __name__ == "__main__":
    main()
