"""Issue 21's numbers from a serve run's stored rows (no model is run): per (model, T) the held memory per
sequence against its analytic size, batching's gain in aggregate decode tokens/s, and the capacity ratio of each
recurrent model against each transformer at the longest context.

Usage: python benchmarks/serving_numbers.py RUN_DIR [--large-batch 64]
The runs: results/reference/serving-169m (T = 1,024 and 8,192) and serving-32k (T = 32,768), whose commands
the README's serving section gives.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rwkv_bench.recording import read_meta
from rwkv_bench.scaling.capacity import measured_bytes_per_sequence
from rwkv_bench.scaling.serving_report import budget_of, capacity_rows, ratio_lines, speedups
from rwkv_bench.scaling.store import read_serving


def held_vs_analytic(serving) -> list[str]:
    out = []
    for (model, T), rows in serving.groupby(["model", "seq_len"], sort=False):
        grid = rows[rows["role"] != "capacity"]
        analytic = rows["state_bytes"].dropna()
        for column, what in (("held_mem_bytes", "held after the steps"), ("states_held_bytes", "states alone")):
            measured = measured_bytes_per_sequence(grid, column)
            if measured and len(analytic):
                ratio = measured[0] / float(analytic.iloc[0])
                verdict = "within 10%" if abs(ratio - 1) <= 0.10 else "NOT within 10%"
                out.append(f"{model} T={T} ({what}): {measured[0] / 1024:.1f} KiB per sequence {measured[1]}, "
                           f"analytic {float(analytic.iloc[0]) / 1024:.1f} KiB: ratio {ratio:.3f} ({verdict})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--large-batch", type=int, default=64)
    args = ap.parse_args()
    serving, meta = read_serving(args.run_dir), read_meta(args.run_dir)
    print(f"{meta.get('cpu')}, {meta.get('cpu_count')} CPUs, load average at start {meta.get('load_average_start')}"
          f", at end {meta.get('load_average_end')}")
    print("\n".join(held_vs_analytic(serving)))
    for s in speedups(serving, args.large_batch):
        print(f"{s['model']} T={s['T']}: aggregate decode tokens/s at B={args.large_batch} / B=1 = {s['ratio']:.3g}")
    for r in capacity_rows(serving, budget_of(meta)):
        print(f"{r['model']} T={r['T']}: largest B {r['largest B']} ({r['basis']}; {r['status']}), "
              f"decode tok/s {r['decode tok/s']}")
    print("\n".join(line.removeprefix("- ") for line in ratio_lines(serving, meta)))


if __name__ == "__main__":
    main()
