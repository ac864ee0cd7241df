"""Our lm-eval model (state reuse) vs lm-eval's own `hf` model on the same RWKV-4 weights.

For each preset (random weights; default rwkv4-169m and rwkv4-small) the weights are also saved as a Hugging
Face RwkvForCausalLM directory, which lm-eval's `hf` model (HFLM) runs through transformers. Both run the
same lm-eval tasks (default: the HellaSwag-shaped `rwkv_bench_hellaswag` and `rwkv_bench_mc`, from tasks/)
in this process, through `lm_eval.simple_evaluate`, counted by the same meter (`rwkv_bench.nlp.meter`):
tokens = positions the network ran (padding included), passes = forward calls, model time = time inside
lm-eval's request methods (a Stopwatch), wall = the whole `simple_evaluate` call.

Timing protocol (CPU shared with other work, so noisy): round 1 runs every batch size (--batch-sizes, plus
hf's own `auto` with --hf-auto) for both runners, alternating ours / hf; each runner's best batch size is the
one with the least model time in round 1; rounds 2..--rounds run only the best sizes, again alternating.
Reported: medians over all rounds at the best batch size, and hf / ours ratios.

Usage: python benchmarks/nlp_state_reuse.py [--presets rwkv4-169m,rwkv4-small]
       [--tasks rwkv_bench_hellaswag,rwkv_bench_mc] [--limit 20] [--rounds 3] [--batch-sizes 1,8,32]
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rwkv_bench.recording import cpu_name

REPO = Path(__file__).resolve().parent.parent


class Runner:
    """One lm-eval model object per batch size, built on first use (hf: loaded from the directory)."""

    def __init__(self, name: str, make):
        self.name, self.make, self.models = name, make, {}

    def get(self, batch_size):
        if batch_size not in self.models:
            self.models[batch_size] = self.make(batch_size)
        return self.models[batch_size]

    def run(self, batch_size, task: str, manager, limit) -> dict:
        import lm_eval

        lm, meter = self.get(batch_size)
        meter.reset()
        start = time.perf_counter()
        out = lm_eval.simple_evaluate(model=lm, tasks=[task], limit=limit, task_manager=manager,
                                      bootstrap_iters=0, batch_size=batch_size)
        wall = time.perf_counter() - start
        counts = {r["request_type"]: r for r in meter.rows()}["loglikelihood"]
        metrics = out["results"][task]
        return {"runner": self.name, "batch_size": batch_size, "task": task,
                "tokens": counts["tokens_processed"], "padding": counts["tokens_padding"],
                "passes": counts["forward_passes"], "model_s": counts["model_time_s"], "wall_s": wall,
                "requests": counts["requests"], "acc": metrics.get("acc,none"),
                "acc_norm": metrics.get("acc_norm,none"), "resolved_batch_size": getattr(lm, "batch_size", None)}


def bench_preset(preset: str, tasks: list[str], args, tmp: Path) -> list[dict]:
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from rwkv_bench.models.peer import save_peer
    from rwkv_bench.nlp.evaluate import save_hf_tokenizer
    from rwkv_bench.nlp.lm_eval_model import RWKVBenchLM
    from rwkv_bench.nlp.meter import attach_meter
    from rwkv_bench.backends import resolve

    backend = resolve(preset, device="cpu", dtype=torch.float32, seed=0)
    directory = save_peer(preset, tmp / preset, seed=0)  # transformers' RwkvForCausalLM, the same weights
    save_hf_tokenizer(backend.tokenizer, directory)

    def make_ours(bs):
        lm = RWKVBenchLM(backend=backend, batch_size=bs)
        return lm, lm.meter

    def make_hf(bs):
        lm = HFLM(pretrained=str(directory), device="cpu", dtype="float32", batch_size=bs)
        return lm, attach_meter(lm)

    ours, hf = Runner("ours", make_ours), Runner("hf", make_hf)
    manager = TaskManager(include_path=str(REPO / "tasks"), include_defaults=False)
    hf_sizes = list(args.batch_sizes) + (["auto"] if args.hf_auto else [])
    rows = []

    def record(row: dict) -> None:
        log.append(row)
        print("  " + json.dumps({k: v for k, v in row.items() if k != "task"}), flush=True)

    for task in tasks:
        log = []
        for bs_ours, bs_hf in itertools.zip_longest(args.batch_sizes, hf_sizes):  # round 1: every size, alternating
            for runner, bs in ((ours, bs_ours), (hf, bs_hf)):
                if bs is None:
                    continue
                try:
                    row = runner.run(bs, task, manager, args.limit) | {"round": 1}
                except Exception as exc:  # noqa: BLE001  (hf's `auto` may not work on a CPU)
                    print(f"  {preset} {task} {runner.name} batch {bs}: failed ({type(exc).__name__}: {exc})")
                    continue
                record(row)
        best = {name: min((r for r in log if r["runner"] == name), key=lambda r: r["model_s"])["batch_size"]
                for name in ("ours", "hf")}
        for rnd in range(2, args.rounds + 1):
            for runner in (ours, hf) if rnd % 2 == 0 else (hf, ours):
                record(runner.run(best[runner.name], task, manager, args.limit) | {"round": rnd})
        for name in ("ours", "hf"):
            runs = [r for r in log if r["runner"] == name and r["batch_size"] == best[name]]
            med = {k: statistics.median(r[k] for r in runs) for k in ("model_s", "wall_s")}
            rows.append({**runs[0], **med, "preset": preset, "runs": len(runs),
                         "model_s_all": [round(r["model_s"], 2) for r in runs]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="rwkv4-169m,rwkv4-small")
    ap.add_argument("--tasks", default="rwkv_bench_hellaswag,rwkv_bench_mc")
    ap.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--hf-auto", action="store_true", help="also try hf's own batch_size=auto")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            print(f"{preset}:", flush=True)
            rows += bench_preset(preset.strip(), args.tasks.split(","), args, Path(tmp))
    print(f"\nCPU: {cpu_name()} ({torch.get_num_threads()} torch threads), torch {torch.__version__}, float32; "
          f"medians of {args.rounds} alternating rounds at each runner's best batch size")
    print("| preset | task | runner | batch | requests | tokens | passes | model s | wall s | acc | acc_norm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['task']} | {r['runner']} | {r['batch_size']} | {r['requests']} | "
              f"{r['tokens']:,} | {r['passes']} | {r['model_s']:.2f} | {r['wall_s']:.2f} | {r['acc']:.3f} | "
              f"{r['acc_norm']:.3f} |")
    print("\n| preset | task | tokens hf/ours | passes hf/ours | model time hf/ours | wall hf/ours | same acc |")
    print("|---|---|---|---|---|---|---|")
    for i in range(0, len(rows), 2):
        o, h = rows[i], rows[i + 1]
        same = o["acc"] == h["acc"] and o["acc_norm"] == h["acc_norm"]
        print(f"| {o['preset']} | {o['task']} | {h['tokens'] / o['tokens']:.2f}x | {h['passes'] / o['passes']:.2f}x | "
              f"{h['model_s'] / o['model_s']:.2f}x | {h['wall_s'] / o['wall_s']:.2f}x | {same} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
