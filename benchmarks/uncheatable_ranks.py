"""Does the uncheatable eval scale with torchrun ranks? 1 rank x 1 thread against N ranks x 1 thread each.

Runs the same `rwkv-bench uncheatable` twice on a papers file: once as one process with one thread
(OMP_NUM_THREADS=1, no torchrun) and once under `torchrun --standalone --nproc-per-node N` (each rank takes
cores // N threads: one each when N equals the cores). Reports papers per second two ways:
  - end to end: papers / wall time of the whole command (start-up, model loading, scoring, report);
  - scoring only: papers / the scoring phase, i.e. the slowest rank's seconds from its model being loaded to
    its last row (meta.json: models.<spec>.scoring_seconds), so model loading (~15 s for smollm2) is left out;
and checks that both runs wrote the same per_paper.csv (same rows in the same order; bits per byte within
1e-6). Load average before and after each run, and the CPU, are printed with the numbers.

The machine should be otherwise idle: on a shared one, "cores used while scoring" (CPU seconds / wall
seconds) shows how much of the cores the ranks actually got.

Usage: python benchmarks/uncheatable_ranks.py ../shared/uncheatable/dev.json [--model smollm2-135m]
       [--ranks 2] [--papers N] [--repeats R] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rwkv_bench.recording import cpu_name, load_average, read_meta
from rwkv_bench.uncheatable.store import read_per_paper

BIN = Path(sys.executable).parent
EXACT = ["model", "paper_id", "text_source", "tokens", "bytes", "chars"]


def launch(ranks: int, args: list[str], out: Path) -> dict:
    """One run: 1 rank = one process with one thread (no torchrun); N ranks = torchrun on this machine."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cli = [str(BIN / "rwkv-bench"), "uncheatable", *args, "--out", str(out), "--no-progress"]
    if ranks == 1:
        env["OMP_NUM_THREADS"] = "1"
        cmd = cli
    else:
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(ranks), "--no-python", *cli]
    before = load_average()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    meta = read_meta(out)
    model = meta["model_specs"][0]
    entry = meta["models"][model]
    papers = len(read_per_paper(out / "per_paper.csv"))
    threads = sorted({r["torch_threads"] for r in entry.get("ranks", [entry])})
    return {"ranks": ranks, "threads_per_rank": threads, "papers": papers, "wall_s": wall,
            "scoring_s": entry["scoring_seconds"], "scoring_cpu_s": entry["scoring_cpu_seconds"],
            # the cores the ranks actually got while scoring (ranks x threads when the machine is otherwise idle)
            "cores_used": entry["scoring_cpu_seconds"] / entry["scoring_seconds"], "load_s": [r["load_seconds"] for r in entry.get("ranks", [entry])],
            "papers_per_s_end_to_end": papers / wall, "papers_per_s_scoring": papers / entry["scoring_seconds"],
            "load_average_before": before, "load_average_after": load_average()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("papers_file", type=Path)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--papers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1,
                    help="pairs of runs, in alternating order (1 then N, N then 1, ...) so drift hits both")
    ap.add_argument("--out", type=Path, default=None, help="where the run directories go (default: a temp dir)")
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="uncheatable-ranks-"))
    common = ["--papers-file", str(args.papers_file), "--models", args.model, "--bootstrap", "1000"]
    if args.papers:
        common += ["--papers", str(args.papers)]
    print(f"cpu: {cpu_name()}, {os.cpu_count()} cores; model {args.model}; {args.papers_file}")
    runs, pairs = [], []
    for i in range(args.repeats):
        pair = {}
        for ranks in ((1, args.ranks) if i % 2 == 0 else (args.ranks, 1)):
            r = launch(ranks, common, root / f"repeat{i}-ranks{ranks}")
            r["dir"] = str(root / f"repeat{i}-ranks{ranks}")
            print(f"{r['ranks']} rank(s) x {r['threads_per_rank']} thread(s): {r['papers']} papers, wall "
                  f"{r['wall_s']:.1f} s (load {r['load_s']} s), scoring {r['scoring_s']:.1f} s -> "
                  f"{r['papers_per_s_end_to_end']:.3f} papers/s end to end, {r['papers_per_s_scoring']:.3f} papers/s "
                  f"scoring only, {r['cores_used']:.2f} cores used while scoring; load average "
                  f"{r['load_average_before']} -> {r['load_average_after']}", flush=True)
            pair[ranks] = r
            runs.append(r)
        pairs.append({"speedup_scoring": pair[args.ranks]["papers_per_s_scoring"] / pair[1]["papers_per_s_scoring"],
                      "speedup_end_to_end": pair[args.ranks]["papers_per_s_end_to_end"]
                      / pair[1]["papers_per_s_end_to_end"]})
    first = read_per_paper(Path(runs[0]["dir"]) / "per_paper.csv")
    same_rows, max_diff = True, 0.0
    for r in runs[1:]:
        other = read_per_paper(Path(r["dir"]) / "per_paper.csv")
        same_rows &= first[EXACT].equals(other[EXACT])
        max_diff = max(max_diff, float(np.max(np.abs(first["bits_per_byte"].to_numpy()
                                                      - other["bits_per_byte"].to_numpy()))))
    for k, p in enumerate(pairs):
        print(f"pair {k}: speed-up with {args.ranks} ranks {p['speedup_scoring']:.2f}x scoring only (model loading "
              f"excluded), {p['speedup_end_to_end']:.2f}x end to end")
    print(f"per_paper.csv: same rows in the same order in all {len(runs)} runs: {same_rows}; "
          f"max |bits/byte difference| {max_diff:.2e}")
    summary = {"cpu": cpu_name(), "cores": os.cpu_count(), "model": args.model, "papers_file": str(args.papers_file),
               "runs": runs, "pairs": pairs, "same_rows": same_rows, "max_bits_per_byte_diff": max_diff}
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"runs: {root}")
    if not same_rows or max_diff > 1e-6:
        sys.exit("the runs disagree")


if __name__ == "__main__":
    main()
